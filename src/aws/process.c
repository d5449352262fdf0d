#include "aws/process.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "common/util.h"

#define STEP_MS    100
#define DIAG_MAX   2048 /* the tail of stderr kept for the error message */
#define DIAG_QUOTE 160

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The last non-empty line of the stderr tail, printable ASCII, cut to DIAG_QUOTE bytes. */
static void last_line(const char *tail, size_t n, char *out, size_t outlen)
{
    while (n && (tail[n - 1] == '\n' || tail[n - 1] == '\r' || tail[n - 1] == ' '))
        n--;
    size_t start = n;
    while (start && tail[start - 1] != '\n')
        start--;
    size_t len = n - start < DIAG_QUOTE ? n - start : DIAG_QUOTE;
    if (len >= outlen)
        len = outlen ? outlen - 1 : 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)tail[start + i];
        out[i] = c < 0x20 || c >= 0x7f ? '?' : (char)c;
    }
    if (outlen)
        out[len] = '\0';
}

/* Ends the whole process group and reaps the shell. */
static void kill_group(pid_t pid)
{
    kill(-pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
}

static th_err spawn(const char *command, pid_t *pid, int *out_fd, int *err_fd, char *why,
                    size_t whylen)
{
    int op[2] = {-1, -1}, ep[2] = {-1, -1};
    if (pipe2(op, O_CLOEXEC) != 0 || pipe2(ep, O_CLOEXEC) != 0) {
        snprintf(why, whylen, "cannot create a pipe: %s", strerror(errno));
        if (op[0] >= 0) {
            close(op[0]);
            close(op[1]);
        }
        return TH_E_IO;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, op[1], 1);
    posix_spawn_file_actions_adddup2(&fa, ep[1], 2);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3); /* no server descriptor leaks in */
    /* A group of its own (killed as one), default signal dispositions and an empty mask: the
       server blocks SIGTERM/SIGHUP for its signal thread and ignores SIGPIPE. */
    sigset_t none, dflt;
    sigemptyset(&none);
    sigemptyset(&dflt);
    sigaddset(&dflt, SIGPIPE);
    sigaddset(&dflt, SIGTERM);
    sigaddset(&dflt, SIGINT);
    sigaddset(&dflt, SIGHUP);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &dflt);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {(char *)"sh", (char *)"-c", (char *)command, NULL};
    int rc = posix_spawn(pid, "/bin/sh", &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(op[1]);
    close(ep[1]);
    if (rc != 0) {
        snprintf(why, whylen, "cannot run /bin/sh: %s", strerror(rc));
        close(op[0]);
        close(ep[0]);
        return TH_E_IO;
    }
    *out_fd = op[0];
    *err_fd = ep[0];
    return TH_E_OK;
}

th_err th_aws_process_run(const char *command, long timeout_ms, bool (*stop)(void *), void *ud,
                          struct th_buf *out, char *why, size_t whylen)
{
    th_buf_reset(out);
    if (!command || !*command) {
        snprintf(why, whylen, "credential_process is empty");
        return TH_E_INVAL;
    }
    pid_t pid;
    int fds[2];
    th_err e = spawn(command, &pid, &fds[0], &fds[1], why, whylen);
    if (e != TH_E_OK)
        return e;
    char tail[DIAG_MAX];
    size_t tail_len = 0;
    int64_t deadline = mono_ms() + timeout_ms;
    bool open_out = true, open_err = true, exited = false;
    int status = 0;
    e = TH_E_OK;
    while (e == TH_E_OK) {
        if (stop && stop(ud)) {
            e = TH_E_BUSY;
            snprintf(why, whylen, "stopped");
            break;
        }
        int64_t left = deadline - mono_ms();
        if (left <= 0) {
            e = TH_E_TIMEOUT;
            snprintf(why, whylen, "credential_process did not finish within %ld ms", timeout_ms);
            break;
        }
        if (!open_out && !open_err) { /* both closed: wait for the exit */
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid) {
                exited = true;
                break;
            }
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        struct pollfd pf[2] = {{.fd = open_out ? fds[0] : -1, .events = POLLIN},
                               {.fd = open_err ? fds[1] : -1, .events = POLLIN}};
        int n = poll(pf, 2, (int)(left < STEP_MS ? left : STEP_MS));
        if (n < 0 && errno != EINTR) {
            e = TH_E_IO;
            snprintf(why, whylen, "poll: %s", strerror(errno));
            break;
        }
        char buf[4096];
        if (open_out && (pf[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t r = read(fds[0], buf, sizeof buf);
            if (r > 0 && th_buf_append(out, buf, (size_t)r) != TH_E_OK) {
                e = TH_E_TOOBIG;
                snprintf(why, whylen, "credential_process wrote more than %zu bytes", out->max);
            } else if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) {
                open_out = false;
            }
            OPENSSL_cleanse(buf, sizeof buf);
        }
        if (open_err && (pf[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t r = read(fds[1], buf, sizeof buf);
            if (r > 0) {
                size_t k = (size_t)r;
                if (k >= sizeof tail) { /* keep the newest bytes only */
                    memcpy(tail, buf + k - sizeof tail, sizeof tail);
                    tail_len = sizeof tail;
                } else {
                    if (tail_len + k > sizeof tail) {
                        size_t drop = tail_len + k - sizeof tail;
                        memmove(tail, tail + drop, tail_len - drop);
                        tail_len -= drop;
                    }
                    memcpy(tail + tail_len, buf, k);
                    tail_len += k;
                }
            } else if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) {
                open_err = false;
            }
        }
    }
    close(fds[0]);
    close(fds[1]);
    if (!exited)
        kill_group(pid);
    if (e == TH_E_OK) {
        char line[DIAG_QUOTE + 1];
        last_line(tail, tail_len, line, sizeof line);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            return TH_E_OK;
        e = TH_E_IO;
        if (WIFEXITED(status))
            snprintf(why, whylen, "credential_process exited with status %d%s%s",
                     WEXITSTATUS(status), line[0] ? ": " : "", line);
        else
            snprintf(why, whylen, "credential_process was killed by signal %d",
                     WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
    if (out->data)
        OPENSSL_cleanse(out->data, out->len);
    th_buf_reset(out);
    return e;
}

static bool visible_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

th_err th_aws_process_parse(const char *json, size_t len, struct th_aws_credentials *out, char *why,
                            size_t whylen)
{
    json_error_t jerr;
    json_t *doc = json_loadb(json ? json : "", json ? len : 0, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(doc)) {
        snprintf(why, whylen, "credential_process output is not a JSON object");
        json_decref(doc);
        return TH_E_INVAL;
    }
    th_err e = TH_E_INVAL;
    struct th_aws_credentials v = {0};
    json_t *ver = json_object_get(doc, "Version");
    const char *akid = json_string_value(json_object_get(doc, "AccessKeyId"));
    const char *secret = json_string_value(json_object_get(doc, "SecretAccessKey"));
    json_t *tok = json_object_get(doc, "SessionToken");
    json_t *exp = json_object_get(doc, "Expiration");
    if (!json_is_integer(ver) || json_integer_value(ver) != 1) {
        snprintf(why, whylen, "credential_process output: \"Version\" must be 1");
    } else if (!akid || !secret || !*akid || !*secret || !visible_ascii(akid) ||
               !visible_ascii(secret) ||
               th_strlcpy(v.access_key_id, akid, sizeof v.access_key_id) >=
                   sizeof v.access_key_id ||
               th_strlcpy(v.secret_access_key, secret, sizeof v.secret_access_key) >=
                   sizeof v.secret_access_key) {
        snprintf(why, whylen,
                 "credential_process output: \"AccessKeyId\" / \"SecretAccessKey\" missing, "
                 "empty, too long or not visible ASCII");
    } else if (tok && !json_is_null(tok) &&
               (!json_is_string(tok) || !visible_ascii(json_string_value(tok)) ||
                th_strlcpy(v.session_token, json_string_value(tok), sizeof v.session_token) >=
                    sizeof v.session_token)) {
        snprintf(why, whylen,
                 "credential_process output: \"SessionToken\" is not a string of visible ASCII "
                 "that fits");
    } else if (exp && !json_is_null(exp) &&
               (!json_is_string(exp) ||
                th_parse_iso8601(json_string_value(exp), &v.expires_ms) != TH_E_OK ||
                v.expires_ms <= 0)) {
        snprintf(why, whylen, "credential_process output: \"Expiration\" is not an ISO 8601 time");
    } else {
        *out = v;
        e = TH_E_OK;
    }
    OPENSSL_cleanse(&v, sizeof v);
    json_decref(doc); /* jansson does not wipe its strings; the caller wipes the raw output */
    return e;
}

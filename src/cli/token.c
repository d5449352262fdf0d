/*
 * `telehook token ...`: developer tooling for the OAuth 2.0 path, so it runs end to end without
 * Okta.
 *
 *   token keygen [--alg RS256|ES256] [--kid KID] [--dir DIR]   (options parsed by cli.c)
 *       writes DIR/jwt-private.jwk (the signing key, mode 0600 even over an older file) and
 *       DIR/jwks.json (the public key set, 0644: point auth.jwks_file at it); a symlink or a
 *       hard-linked file in their place is refused
 *   token mint --key FILE [--ttl SECONDS] [--cid ID] [--scope "a b"] [--iss URL] [--aud AUD]
 *              [--claim NAME=VALUE ...]
 *       prints a token with Okta's access-token claims; iss, aud and scp default to the
 *       configuration's auth.issuer, auth.audience and auth.scopes
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "auth/jwt.h"
#include "cli/internal.h"
#include "common/util.h"

/*
 * Writes text and a newline to path, which ends with exactly mode whether it was created or
 * already there (open's mode only applies to a new file: a key written over an old 0644 file
 * would stay world-readable). Refused: a symlink (O_NOFOLLOW: the key must not land wherever the
 * link points) and anything but a regular file with one link (a hard link would expose the key
 * under another name). The mode is set before the first byte is written.
 */
static int write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, mode);
    if (fd < 0) {
        fprintf(stderr, "telehook: %s: %s\n", path,
                errno == ELOOP ? "is a symbolic link: refused (remove it or choose --dir)"
                               : strerror(errno));
        return 1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
        fprintf(stderr, "telehook: %s: not a regular file with a single link: refused\n", path);
        close(fd);
        return 1;
    }
    if (fchmod(fd, mode) != 0 || ftruncate(fd, 0) != 0) {
        fprintf(stderr, "telehook: %s: %s\n", path, strerror(errno));
        close(fd);
        return 1;
    }
    size_t n = strlen(text);
    bool ok = write(fd, text, n) == (ssize_t)n && write(fd, "\n", 1) == 1;
    ok = close(fd) == 0 && ok;
    if (!ok)
        fprintf(stderr, "telehook: %s: write failed\n", path);
    return ok ? 0 : 1;
}

static int keygen(struct th_cli *cli)
{
    static const char *const algs[] = {"RS256", "ES256", NULL};
    const char *alg = NULL, *kid = th_cli_opt(cli, TH_OPT_KID), *dir = th_cli_opt(cli, TH_OPT_DIR);
    if (th_cli_choice(cli, TH_OPT_ALG, algs, &alg))
        return 2;
    alg = alg ? alg : "RS256";
    dir = dir ? dir : ".";
    char *priv = NULL, *jwks = NULL;
    if (th_jwt_keygen(alg, kid, &priv, &jwks) != TH_E_OK) {
        fprintf(stderr, "telehook: key generation failed\n");
        return 1;
    }
    char p1[4096], p2[4096];
    snprintf(p1, sizeof p1, "%s/jwt-private.jwk", dir);
    snprintf(p2, sizeof p2, "%s/jwks.json", dir);
    int rc = write_file(p1, priv, 0600) || write_file(p2, jwks, 0644);
    memset(priv, 0, strlen(priv));
    free(priv);
    free(jwks);
    if (rc == 0)
        fprintf(stderr,
                "wrote %s (private, keep it secret) and %s\n"
                "use it: [auth] mode = oauth2, jwks_file = %s\n",
                p1, p2, p2);
    return rc;
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = calloc(1, 65536);
    size_t n = buf ? fread(buf, 1, 65535, f) : 0;
    fclose(f);
    if (buf && n == 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static int mint(struct th_cli *cli)
{
    const struct th_config *cfg = &cli->cfg;
    const char *key = th_cli_opt(cli, TH_OPT_KEY), *cid = th_cli_opt(cli, TH_OPT_CID);
    const char *scope = th_cli_opt(cli, TH_OPT_SCOPE), *iss = th_cli_opt(cli, TH_OPT_ISS);
    const char *aud = th_cli_opt(cli, TH_OPT_AUD);
    cid = cid ? cid : "0oa-telehook-dev";
    scope = scope ? scope : cfg->auth_scopes;
    iss = iss ? iss : cfg->auth_issuer;
    aud = aud ? aud : cfg->auth_audience;
    long ttl;
    json_t *extra = json_object();
    int rc = 2;
    if (th_cli_number(cli, TH_OPT_TTL, -31536000, 31536000, 3600, &ttl))
        goto out;
    for (int i = 0; i < cli->opts->ngiven; i++) {
        const char *v = cli->opts->given[i].val;
        if (cli->opts->given[i].opt != TH_OPT_CLAIM)
            continue;
        if (!strchr(v, '=') || v[0] == '=') {
            fprintf(stderr, "telehook: --claim: '%s' is not NAME=VALUE\n", v);
            goto out;
        }
        /* NAME=VALUE: VALUE as JSON when it parses (numbers, arrays), else a string */
        char name[128];
        size_t nl = (size_t)(strchr(v, '=') - v);
        snprintf(name, sizeof name, "%.*s", (int)(nl < 127 ? nl : 127), v);
        json_t *val = json_loads(v + nl + 1, JSON_DECODE_ANY, NULL);
        json_object_set_new(extra, name, val ? val : json_string(v + nl + 1));
    }
    if (!key) {
        fprintf(stderr, "telehook: token mint needs --key FILE (from `telehook token keygen`)\n");
        goto out;
    }
    /* A token without an issuer would be refused by the server it is minted for: say so now. */
    if (!iss || !iss[0]) {
        fprintf(stderr, "telehook: token mint needs an issuer: set [auth] issuer (the server "
                        "checks iss against it) or pass --iss URL\n");
        goto out;
    }
    char *jwk = read_all(key);
    if (!jwk) {
        fprintf(stderr, "telehook: cannot read %s\n", key);
        rc = 1;
        goto out;
    }
    int64_t now = (int64_t)time(NULL);
    char jti[40];
    th_random_id("AT.", jti, sizeof jti);
    json_t *scp = json_array();
    char *scopes = strdup(scope ? scope : "");
    for (char *t = scopes ? strtok(scopes, " ,") : NULL; t; t = strtok(NULL, " ,"))
        json_array_append_new(scp, json_string(t));
    free(scopes);
    /* Okta's access-token claims for a client-credentials token */
    json_t *c = json_pack("{s:i, s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:o}", "ver", 1, "jti", jti,
                          "iss", iss, "aud", aud, "iat", (json_int_t)now, "exp",
                          (json_int_t)(now + ttl), "cid", cid, "sub", cid, "scp", scp);
    json_object_update(c, extra);
    char *claims = json_dumps(c, JSON_COMPACT);
    char *token = NULL;
    char err[256];
    if (claims && th_jwt_mint(jwk, claims, &token, err, sizeof err) == TH_E_OK) {
        printf("%s\n", token);
        rc = 0;
    } else {
        fprintf(stderr, "telehook: %s\n", claims ? err : "out of memory");
        rc = 1;
    }
    free(token);
    free(claims);
    json_decref(c);
    memset(jwk, 0, strlen(jwk));
    free(jwk);
out:
    json_decref(extra);
    return rc;
}

int th_cmd_token_keygen(struct th_cli *cli)
{
    return keygen(cli);
}

int th_cmd_token_mint(struct th_cli *cli)
{
    return mint(cli);
}

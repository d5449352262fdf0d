/*
 * `telehook probe [URL]`: a health check a load balancer, a container runtime or a script can run
 * without curl. GET URL (default: this configuration's own /readyz on loopback) and exit 0 when it
 * answers 200, 1 otherwise, with one line saying why.
 *
 * Over HTTPS the default URL is checked against the server's own certificate (server.tls_cert): its
 * public key is pinned, so the probe talks to this server whatever name the certificate carries
 * (it is made for hook.example.com, the probe connects to 127.0.0.1). A URL given on the command
 * line is verified the usual way (the system's CAs, or [tls] ca_file).
 */
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "cli/internal.h"
#include "common/util.h"

/* "sha256//BASE64" of the public key of the first certificate in path, for CURLOPT_PINNEDPUBLICKEY.
 */
static bool pin_of(const char *path, char *out, size_t outlen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!x)
        return false;
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(X509_get0_pubkey(x), &der);
    X509_free(x);
    if (n <= 0)
        return false;
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(der, (size_t)n, md);
    OPENSSL_free(der);
    unsigned char b64[64];
    EVP_EncodeBlock(b64, md, sizeof md);
    return (size_t)snprintf(out, outlen, "sha256//%s", b64) < outlen;
}

/* This configuration's own /readyz, on loopback; false when the port is not known (port 0). */
static bool default_url(const struct th_config *cfg, char *url, size_t len)
{
    char host[256], v6[260];
    int port;
    if (th_hostport_parse(cfg->listen, host, sizeof host, &port) != TH_E_OK || port == 0)
        return false;
    const char *h = host;
    if (strcmp(host, "") == 0 || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "*") == 0)
        h = "127.0.0.1";
    else if (strcmp(host, "::") == 0)
        h = "[::1]";
    else if (strchr(host, ':') && (size_t)snprintf(v6, sizeof v6, "[%s]", host) < sizeof v6)
        h = v6;
    bool tls = cfg->tls_cert && cfg->tls_cert[0];
    return (size_t)snprintf(url, len, "%s://%s:%d/readyz", tls ? "https" : "http", h, port) < len;
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

int th_cmd_probe(struct th_cli *cli)
{
    long timeout;
    if (th_cli_number(cli, TH_OPT_TIMEOUT, 1, 60, 2, &timeout))
        return 2;
    char url[600], pin[128] = "";
    if (cli->argc == 1) {
        th_strlcpy(url, cli->argv[0], sizeof url);
    } else if (!default_url(&cli->cfg, url, sizeof url)) {
        fprintf(stderr, "telehook probe: server.listen (%s) names no port: give the URL\n",
                cli->cfg.listen);
        return 2;
    } else if (strncmp(url, "https:", 6) == 0 && !pin_of(cli->cfg.tls_cert, pin, sizeof pin)) {
        fprintf(stderr, "telehook probe: cannot read the certificate in server.tls_cert (%s)\n",
                cli->cfg.tls_cert);
        return 2;
    }
    CURL *c = curl_easy_init();
    if (!c) {
        fprintf(stderr, "telehook probe: out of memory\n");
        return 1;
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout * 1000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "telehook-probe/" TH_VERSION);
    if (pin[0]) {
        /* our own server by its key; the name and chain are the public's business */
        curl_easy_setopt(c, CURLOPT_PINNEDPUBLICKEY, pin);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    } else if (cli->cfg.tls_ca_file && cli->cfg.tls_ca_file[0]) {
        curl_easy_setopt(c, CURLOPT_CAINFO, cli->cfg.tls_ca_file);
    }
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) {
        fprintf(stderr, "telehook probe: %s: %s\n", url,
                errbuf[0] ? errbuf : curl_easy_strerror(rc));
        return 1;
    }
    if (status != 200) {
        fprintf(stderr, "telehook probe: %s: HTTP %ld (not ready)\n", url, status);
        return 1;
    }
    printf("ready: %s\n", url);
    return 0;
}

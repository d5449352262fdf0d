/*
 * Unit tests: aws/sigv4 (AWS Signature Version 4).
 * 1. every case of the classic AWS test suite (tests/vectors/sigv4, found by walking the tree);
 * 2. every botocore-derived JSON-protocol request (tests/vectors/sigv4-derived);
 * 3. known-answer signing keys; 4. negative checks and the canonicalisation choices the suites
 *    leave open. Canonical request, string to sign and Authorization are compared byte for byte.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "aws/sigv4.h"
#include "common/buf.h"

/* Fixed inputs of the classic suite (tests/vectors/sigv4/README.md). */
#define AKID          "AKIDEXAMPLE"
#define SECRET        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define REGION        "us-east-1"
#define SERVICE       "service"
#define SUITE_CASES   34
#define DERIVED_CASES 7
#define EMPTY_SHA256  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

#define MAX_CASES 64

/* ---- helpers ------------------------------------------------------------------------------- */

/* snprintf that fails the test instead of truncating. */
__attribute__((format(printf, 3, 4))) static void fmt(char *out, size_t outlen, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(out, outlen, f, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < outlen);
}

static void vector_path(char *out, size_t outlen, const char *rel)
{
    const char *root = getenv("TH_TEST_SRCDIR");
    fmt(out, outlen, "%s/tests/vectors/%s", root ? root : ".", rel);
}

/* Whole file, NUL-terminated (malloc'd), or NULL when it cannot be read. */
static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (size_t got; (got = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += got;
        if (cap - n - 1 == 0) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

static void key_hex(const unsigned char key[TH_SIGV4_KEY_LEN], char out[2 * TH_SIGV4_KEY_LEN + 1])
{
    for (size_t i = 0; i < TH_SIGV4_KEY_LEN; i++)
        snprintf(out + 2 * i, 3, "%02x", key[i]);
}

/* Reports the first differing byte of a mismatch; true when equal. */
static bool same(const char *what, const char *name, const char *got, const char *want)
{
    if (strcmp(got, want) == 0)
        return true;
    size_t i = 0;
    while (got[i] && got[i] == want[i])
        i++;
    print_error("%s: %s differs at byte %zu\n--- got\n%s\n--- want\n%s\n", name, what, i, got,
                want);
    return false;
}

/* ---- 1. the classic AWS test suite --------------------------------------------------------- */

/* A parsed .req: every pointer points into text (modified in place). */
struct req {
    char *text;
    const char *method, *path, *query;
    struct th_sigv4_header headers[TH_SIGV4_MAX_HEADERS];
    size_t nheaders;
    const char *body;
    size_t body_len;
};

static const char *find_header(const struct req *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

/*
 * Request line "METHOD SP target SP HTTP/1.1" (the target may hold a literal space, so it ends at
 * the LAST " HTTP/"), headers "Name:value" with obsolete folding (continuation lines start with
 * SP or HTAB and stay in the value with their LF: folding is the signer's job), blank line, body.
 */
static void parse_req(char *text, size_t len, struct req *r)
{
    memset(r, 0, sizeof *r);
    r->text = text;
    char *end = text + len;
    char *eol = strchr(text, '\n');
    if (!eol)
        eol = end;
    *eol = '\0';
    char *sp = strchr(text, ' ');
    char *http = NULL;
    for (char *p = text; (p = strstr(p, " HTTP/")) != NULL; p++)
        http = p;
    assert_non_null(sp);
    assert_non_null(http);
    assert_true(http > sp);
    *sp = '\0';
    *http = '\0';
    r->method = text;
    char *target = sp + 1;
    char *q = strchr(target, '?');
    if (q)
        *q++ = '\0';
    r->path = target;
    r->query = q ? q : "";

    char *p = eol < end ? eol + 1 : end;
    r->body = "";
    while (p < end) {
        char *line_end = strchr(p, '\n');
        if (!line_end)
            line_end = end;
        if (line_end == p) { /* blank line: the body follows */
            r->body = p + 1;
            r->body_len = (size_t)(end - p - 1);
            break;
        }
        /* extend over continuation lines */
        while (line_end < end && (line_end[1] == ' ' || line_end[1] == '\t')) {
            char *next = strchr(line_end + 1, '\n');
            line_end = next ? next : end;
        }
        bool last = line_end == end;
        *line_end = '\0';
        char *colon = strchr(p, ':');
        assert_non_null(colon);
        *colon = '\0';
        assert_true(r->nheaders < TH_SIGV4_MAX_HEADERS);
        r->headers[r->nheaders++] = (struct th_sigv4_header){p, colon + 1};
        if (last)
            break;
        p = line_end + 1;
    }
}

/* The value of the "x-amz-security-token:" line of a .creq (copied into out), or NULL. */
static const char *creq_token(const char *creq, char *out, size_t outlen)
{
    const char *t = strstr(creq, "\nx-amz-security-token:");
    if (!t)
        return NULL;
    t += strlen("\nx-amz-security-token:");
    size_t n = strcspn(t, "\n");
    assert_true(n < outlen);
    memcpy(out, t, n);
    out[n] = '\0';
    return out;
}

struct suite_case {
    char dir[512];  /* absolute */
    char name[128]; /* relative to tests/vectors/sigv4 */
};

struct suite {
    struct suite_case cases[MAX_CASES];
    size_t n;
};

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/*
 * A directory holding any .req/.creq/.sts/.authz/.sreq file is a case (its files must be named
 * after it); every sub-directory is walked, so no case can be skipped silently.
 */
static void walk(struct suite *s, const char *dir, const char *rel)
{
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("cannot open %s (set TH_TEST_SRCDIR to the project root)", dir);
    bool is_case = false;
    char subs[MAX_CASES][128];
    size_t nsubs = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        char path[1024];
        fmt(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            assert_true(nsubs < MAX_CASES);
            fmt(subs[nsubs++], sizeof subs[0], "%s", e->d_name);
        } else if (has_suffix(e->d_name, ".req") || has_suffix(e->d_name, ".creq") ||
                   has_suffix(e->d_name, ".sts") || has_suffix(e->d_name, ".authz") ||
                   has_suffix(e->d_name, ".sreq")) {
            is_case = true;
        }
    }
    closedir(d);
    if (is_case) {
        assert_true(s->n < MAX_CASES);
        fmt(s->cases[s->n].dir, sizeof s->cases[0].dir, "%s", dir);
        fmt(s->cases[s->n].name, sizeof s->cases[0].name, "%s", rel);
        s->n++;
    }
    for (size_t i = 0; i < nsubs; i++) {
        char sub[512], subrel[128];
        fmt(sub, sizeof sub, "%s/%s", dir, subs[i]);
        fmt(subrel, sizeof subrel, "%s%s%s", rel, *rel ? "/" : "", subs[i]);
        walk(s, sub, subrel);
    }
}

/* Reads CASE/BASE.EXT where BASE is the last component of the case directory. */
static char *case_file(const char *dir, const char *ext, size_t *len)
{
    const char *base = strrchr(dir, '/');
    base = base ? base + 1 : dir;
    char path[1024];
    fmt(path, sizeof path, "%s/%s.%s", dir, base, ext);
    char *text = read_all(path, len);
    if (!text)
        fail_msg("missing %s", path);
    return text;
}

/* Signs one suite case; true when creq, sts and authz all match. */
static bool run_suite_case(const char *dir, const char *name, const unsigned char *key)
{
    size_t req_len;
    char *req_text = case_file(dir, "req", &req_len);
    char *want_creq = case_file(dir, "creq", NULL);
    char *want_sts = case_file(dir, "sts", NULL);
    char *want_authz = case_file(dir, "authz", NULL);

    struct req r;
    parse_req(req_text, req_len, &r);
    const char *date = find_header(&r, "X-Amz-Date");
    assert_non_null(date);

    /* Session token: signed only where the expected canonical request lists it (botocore's
       harness does the same). get-vanilla-with-session-token's .req lacks the header, so it is
       added from the .creq; post-sts-header-before carries it in the .req already;
       post-sts-header-after adds it after signing, so it is not signed here. */
    char token[1024];
    if (creq_token(want_creq, token, sizeof token) && !find_header(&r, "X-Amz-Security-Token")) {
        assert_true(r.nheaders < TH_SIGV4_MAX_HEADERS);
        r.headers[r.nheaders++] = (struct th_sigv4_header){"X-Amz-Security-Token", token};
    }

    struct th_sigv4_input in = {
        .method = r.method,
        .path = r.path,
        .query = r.query,
        .headers = r.headers,
        .nheaders = r.nheaders,
        .body = r.body,
        .body_len = r.body_len,
        .amz_date = date,
        .region = REGION,
        .service = SERVICE,
        .access_key_id = AKID,
        .signing_key = key,
    };
    struct th_buf creq, sts;
    th_buf_init(&creq, 1 << 16);
    th_buf_init(&sts, 1 << 12);
    char authz[512];
    th_err err = th_sigv4_sign(&in, &creq, &sts, authz, sizeof authz);
    bool ok = err == TH_E_OK;
    if (!ok)
        print_error("%s: th_sigv4_sign failed: %s\n", name, th_errname(err));
    ok = ok && same("canonical request", name, th_buf_str(&creq), want_creq);
    ok = ok && same("string to sign", name, th_buf_str(&sts), want_sts);
    ok = ok && same("authorization", name, authz, want_authz);

    th_buf_release(&creq);
    th_buf_release(&sts);
    free(req_text);
    free(want_creq);
    free(want_sts);
    free(want_authz);
    return ok;
}

static int cmp_cases(const void *a, const void *b)
{
    return strcmp(((const struct suite_case *)a)->name, ((const struct suite_case *)b)->name);
}

static void test_aws_suite(void **state)
{
    (void)state;
    static struct suite s;
    s.n = 0;
    char root[512];
    vector_path(root, sizeof root, "sigv4");
    walk(&s, root, "");
    assert_int_equal(s.n, SUITE_CASES);

    unsigned char key[TH_SIGV4_KEY_LEN];
    th_sigv4_derive_key(SECRET, "20150830", REGION, SERVICE, key);

    /* Run in name order for a stable report; every case runs even after a failure. */
    qsort(s.cases, s.n, sizeof s.cases[0], cmp_cases);
    size_t passed = 0;
    for (size_t i = 0; i < s.n; i++)
        if (run_suite_case(s.cases[i].dir, s.cases[i].name, key))
            passed++;
    print_message("aws sigv4 suite: %zu/%zu cases pass\n", passed, s.n);
    assert_int_equal(passed, SUITE_CASES);
}

/* The token of post-sts-token/readme.txt is the one post-sts-header-before signs. */
static void test_suite_sts_token(void **state)
{
    (void)state;
    char path[512];
    vector_path(path, sizeof path, "sigv4/post-sts-token/readme.txt");
    char *readme = read_all(path, NULL);
    assert_non_null(readme);
    vector_path(path, sizeof path,
                "sigv4/post-sts-token/post-sts-header-before/post-sts-header-before.creq");
    char *creq = read_all(path, NULL);
    assert_non_null(creq);
    char token[1024];
    assert_non_null(creq_token(creq, token, sizeof token));
    assert_true(strlen(token) > 100);
    assert_non_null(strstr(readme, token));
    /* ... and the "after" case does not sign it. */
    vector_path(path, sizeof path,
                "sigv4/post-sts-token/post-sts-header-after/post-sts-header-after.creq");
    char *after = read_all(path, NULL);
    assert_non_null(after);
    assert_null(strstr(after, "x-amz-security-token"));
    free(readme);
    free(creq);
    free(after);
}

/* ---- 2. botocore-derived JSON-protocol requests -------------------------------------------- */

static const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    if (!s)
        fail_msg("missing string %s", key);
    return s;
}

/* "https://Host[:port]/path?query" → Host header value (port only when not the default),
   path and query (copied into the given buffers). */
static void split_url(const char *url, char *host, size_t hostlen, char *path, size_t pathlen,
                      char *query, size_t querylen)
{
    const char *sep = strstr(url, "://");
    assert_non_null(sep);
    bool https = (size_t)(sep - url) == 5 && strncasecmp(url, "https", 5) == 0;
    const char *h = sep + 3;
    size_t hn = strcspn(h, "/?#");
    const char *rest = h + hn;
    assert_true(hn < hostlen);
    for (size_t i = 0; i < hn; i++)
        host[i] = (char)((h[i] >= 'A' && h[i] <= 'Z') ? h[i] - 'A' + 'a' : h[i]);
    host[hn] = '\0';
    char *colon = strrchr(host, ':');
    if (colon && !strchr(colon, ']') &&
        strcmp(colon + 1, https ? "443" : "80") == 0) /* default port: not signed */
        *colon = '\0';
    size_t pn = strcspn(rest, "?#");
    assert_true(pn < pathlen);
    memcpy(path, rest, pn);
    path[pn] = '\0';
    const char *q = rest[pn] == '?' ? rest + pn + 1 : "";
    size_t qn = strcspn(q, "#");
    assert_true(qn < querylen);
    memcpy(query, q, qn);
    query[qn] = '\0';
}

struct derived {
    json_t *root;
    json_t *cases;
};

static void load_derived(struct derived *d)
{
    char path[512];
    vector_path(path, sizeof path, "sigv4-derived/json-protocol-requests.json");
    json_error_t jerr;
    d->root = json_load_file(path, 0, &jerr);
    if (!d->root)
        fail_msg("%s: %s (line %d)", path, jerr.text, jerr.line);
    d->cases = json_object_get(d->root, "cases");
    assert_true(json_is_array(d->cases));
}

/* Everything needed to sign one derived case (pointers into the JSON document). */
struct derived_req {
    char host[256], path[256], query[256];
    struct th_sigv4_header headers[TH_SIGV4_MAX_HEADERS];
    size_t nheaders;
    struct th_sigv4_input in;
    unsigned char key[TH_SIGV4_KEY_LEN];
};

static void derived_input(json_t *root, json_t *c, struct derived_req *d)
{
    memset(d, 0, sizeof *d);
    split_url(jstr(c, "url"), d->host, sizeof d->host, d->path, sizeof d->path, d->query,
              sizeof d->query);
    const char *date = jstr(root, "x_amz_date");
    /* Host comes from the URL; every other signed header is listed in signed_headers_out. */
    d->headers[d->nheaders++] = (struct th_sigv4_header){"Host", d->host};
    json_t *out = json_object_get(c, "signed_headers_out");
    assert_true(json_is_object(out));
    const char *k;
    json_t *v;
    json_object_foreach(out, k, v)
    {
        if (strcasecmp(k, "Authorization") == 0)
            continue;
        assert_true(d->nheaders < TH_SIGV4_MAX_HEADERS);
        d->headers[d->nheaders++] = (struct th_sigv4_header){k, json_string_value(v)};
    }
    /* Coherence of the vector itself: the pre-signing headers, the date and the token are
       among the signed ones. */
    json_t *before = json_object_get(c, "request_headers_before_signing");
    json_object_foreach(before, k, v)
    {
        assert_string_equal(json_string_value(json_object_get(out, k)), json_string_value(v));
    }
    assert_string_equal(json_string_value(json_object_get(out, "X-Amz-Date")), date);
    json_t *token = json_object_get(c, "session_token");
    if (json_is_string(token))
        assert_string_equal(json_string_value(json_object_get(out, "X-Amz-Security-Token")),
                            json_string_value(token));
    else
        assert_null(json_object_get(out, "X-Amz-Security-Token"));

    const char *body = jstr(c, "body");
    const char *region = jstr(c, "region"), *service = jstr(c, "service");
    th_sigv4_derive_key(jstr(root, "secret_access_key"), date, region, service, d->key);
    d->in = (struct th_sigv4_input){
        .method = jstr(c, "method"),
        .path = d->path,
        .query = d->query,
        .headers = d->headers,
        .nheaders = d->nheaders,
        .body = body,
        .body_len = strlen(body),
        .amz_date = date,
        .region = region,
        .service = service,
        .access_key_id = jstr(root, "access_key_id"),
        .signing_key = d->key,
    };
}

static void test_derived(void **state)
{
    (void)state;
    struct derived dv;
    load_derived(&dv);
    assert_int_equal(json_array_size(dv.cases), DERIVED_CASES);
    struct th_buf creq, sts;
    th_buf_init(&creq, 1 << 16);
    th_buf_init(&sts, 1 << 12);
    size_t i, passed = 0;
    json_t *c;
    json_array_foreach(dv.cases, i, c)
    {
        const char *name = jstr(c, "name");
        static struct derived_req d;
        derived_input(dv.root, c, &d);
        /* Every other case passes the precomputed payload hash instead of letting the signer
           hash the body: both paths must agree with botocore. */
        if (i % 2)
            d.in.payload_hash = jstr(c, "body_sha256");
        char authz[512];
        th_err err = th_sigv4_sign(&d.in, &creq, &sts, authz, sizeof authz);
        bool ok = err == TH_E_OK;
        if (!ok)
            print_error("%s: th_sigv4_sign failed: %s\n", name, th_errname(err));
        ok = ok && same("canonical request", name, th_buf_str(&creq), jstr(c, "canonical_request"));
        ok = ok && same("string to sign", name, th_buf_str(&sts), jstr(c, "string_to_sign"));
        ok = ok && same("authorization", name, authz, jstr(c, "authorization"));
        ok = ok && same("Authorization header", name, authz,
                        jstr(json_object_get(c, "signed_headers_out"), "Authorization"));
        /* the hashed payload line is the body's SHA-256 */
        const char *last = strrchr(th_buf_str(&creq), '\n');
        ok = ok && last && same("payload hash", name, last + 1, jstr(c, "body_sha256"));
        if (ok)
            passed++;
    }
    print_message("sigv4 derived: %zu/%zu cases pass\n", passed, json_array_size(dv.cases));
    assert_int_equal(passed, DERIVED_CASES);
    th_buf_release(&creq);
    th_buf_release(&sts);
    json_decref(dv.root);
}

/* ---- 3. known-answer signing keys ---------------------------------------------------------- */

static void test_signing_keys(void **state)
{
    (void)state;
    unsigned char key[TH_SIGV4_KEY_LEN];
    char hex[2 * TH_SIGV4_KEY_LEN + 1];
    th_sigv4_derive_key(SECRET, "20120215", "us-east-1", "iam", key);
    key_hex(key, hex);
    assert_string_equal(hex, "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
    th_sigv4_derive_key(SECRET, "20150830", REGION, SERVICE, key);
    key_hex(key, hex);
    assert_string_equal(hex, "938127b5336810ddb6a5d6af445fcac9e371f9ed418ed386b022aed82901be75");
    /* the full X-Amz-Date may be passed: only its date part is used */
    th_sigv4_derive_key(SECRET, "20150830T123600Z", REGION, SERVICE, key);
    key_hex(key, hex);
    assert_string_equal(hex, "938127b5336810ddb6a5d6af445fcac9e371f9ed418ed386b022aed82901be75");
    /* Both sides of the one-block boundary: "AWS4" + 60 bytes is used as the HMAC key as is,
       "AWS4" + 61 bytes is hashed first (expected values: Python's hmac module). */
    th_sigv4_derive_key("012345678901234567890123456789012345678901234567890123456789", "20150830",
                        REGION, SERVICE, key);
    key_hex(key, hex);
    assert_string_equal(hex, "21a2a28e59329049f0e079d5b3d754c6335a9c685beb4a85a6959d56e61c3a9a");
    th_sigv4_derive_key("0123456789012345678901234567890123456789012345678901234567890", "20150830",
                        REGION, SERVICE, key);
    key_hex(key, hex);
    assert_string_equal(hex, "e81377924d1016bb60c12d4a5ac8586ffdc866e91f4ed4cc7c4da23a09289687");
    /* NULL input: the all-zero key */
    static const unsigned char zero[TH_SIGV4_KEY_LEN];
    th_sigv4_derive_key(NULL, "20150830", REGION, SERVICE, key);
    assert_memory_equal(key, zero, TH_SIGV4_KEY_LEN);
}

/* ---- 4. negative checks and pinned choices ------------------------------------------------- */

/* A minimal valid request (the suite's post-vanilla). */
struct mini {
    struct th_sigv4_header headers[TH_SIGV4_MAX_HEADERS + 1];
    unsigned char key[TH_SIGV4_KEY_LEN];
    struct th_sigv4_input in;
};

static void mini_init(struct mini *m)
{
    memset(m, 0, sizeof *m);
    m->headers[0] = (struct th_sigv4_header){"Host", "example.amazonaws.com"};
    m->headers[1] = (struct th_sigv4_header){"X-Amz-Date", "20150830T123600Z"};
    th_sigv4_derive_key(SECRET, "20150830", REGION, SERVICE, m->key);
    m->in = (struct th_sigv4_input){
        .method = "POST",
        .path = "/",
        .query = "",
        .headers = m->headers,
        .nheaders = 2,
        .amz_date = "20150830T123600Z",
        .region = REGION,
        .service = SERVICE,
        .access_key_id = AKID,
        .signing_key = m->key,
    };
}

#define POST_VANILLA_AUTHZ                                                                         \
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "            \
    "SignedHeaders=host;x-amz-date, "                                                              \
    "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"

static void test_without_outputs(void **state)
{
    (void)state;
    struct mini m;
    mini_init(&m);
    char authz[512];
    /* creq/sts are optional: the canonical request is hashed as it is built */
    assert_int_equal(th_sigv4_sign(&m.in, NULL, NULL, authz, sizeof authz), TH_E_OK);
    assert_string_equal(authz, POST_VANILLA_AUTHZ);
    /* exactly the needed size works, one byte less is TOOBIG and leaves "" */
    size_t need = strlen(POST_VANILLA_AUTHZ) + 1;
    assert_int_equal(th_sigv4_sign(&m.in, NULL, NULL, authz, need), TH_E_OK);
    assert_string_equal(authz, POST_VANILLA_AUTHZ);
    assert_int_equal(th_sigv4_sign(&m.in, NULL, NULL, authz, need - 1), TH_E_TOOBIG);
    assert_string_equal(authz, "");
    assert_int_equal(th_sigv4_sign(&m.in, NULL, NULL, authz, 1), TH_E_TOOBIG);
    assert_int_equal(th_sigv4_sign(&m.in, NULL, NULL, authz, 0), TH_E_TOOBIG);
    /* a capped creq buffer that cannot hold the canonical request */
    struct th_buf small;
    th_buf_init(&small, 32);
    assert_int_equal(th_sigv4_sign(&m.in, &small, NULL, authz, sizeof authz), TH_E_TOOBIG);
    th_buf_release(&small);
}

static void test_tampering_changes_signature(void **state)
{
    (void)state;
    struct derived dv;
    load_derived(&dv);
    static struct derived_req d;
    json_t *c = json_array_get(dv.cases, 0);
    derived_input(dv.root, c, &d);
    const char *want = jstr(c, "authorization");
    char authz[512];
    assert_int_equal(th_sigv4_sign(&d.in, NULL, NULL, authz, sizeof authz), TH_E_OK);
    assert_string_equal(authz, want);

    /* one body byte changed */
    char body[4096];
    assert_true(d.in.body_len < sizeof body);
    memcpy(body, d.in.body, d.in.body_len);
    body[d.in.body_len / 2] ^= 1;
    struct th_sigv4_input t = d.in;
    t.body = body;
    assert_int_equal(th_sigv4_sign(&t, NULL, NULL, authz, sizeof authz), TH_E_OK);
    assert_string_not_equal(authz, want);
    /* a payload hash that does not match the body wins (it is trusted as given) */
    t = d.in;
    t.payload_hash = EMPTY_SHA256;
    assert_int_equal(th_sigv4_sign(&t, NULL, NULL, authz, sizeof authz), TH_E_OK);
    assert_string_not_equal(authz, want);
    /* a signed header value, the region, the key */
    struct th_sigv4_header h[TH_SIGV4_MAX_HEADERS];
    memcpy(h, d.in.headers, d.in.nheaders * sizeof h[0]);
    for (size_t i = 0; i < d.in.nheaders; i++)
        if (strcasecmp(h[i].name, "X-Amz-Target") == 0)
            h[i].value = "PinpointSMSVoiceV2.SendVoiceMessage";
    t = d.in;
    t.headers = h;
    assert_int_equal(th_sigv4_sign(&t, NULL, NULL, authz, sizeof authz), TH_E_OK);
    assert_string_not_equal(authz, want);
    unsigned char key[TH_SIGV4_KEY_LEN];
    memcpy(key, d.key, sizeof key);
    key[0] ^= 0x80;
    t = d.in;
    t.signing_key = key;
    assert_int_equal(th_sigv4_sign(&t, NULL, NULL, authz, sizeof authz), TH_E_OK);
    assert_string_not_equal(authz, want);
    /* header case and whitespace around values do not matter */
    struct th_sigv4_header h2[TH_SIGV4_MAX_HEADERS];
    char names[TH_SIGV4_MAX_HEADERS][64], values[TH_SIGV4_MAX_HEADERS][2048];
    for (size_t i = 0; i < d.in.nheaders; i++) {
        fmt(names[i], sizeof names[i], "%s", d.in.headers[i].name);
        for (char *p = names[i]; *p; p++)
            *p = (char)((*p >= 'a' && *p <= 'z') ? *p - 'a' + 'A' : *p);
        fmt(values[i], sizeof values[i], " \t%s  ", d.in.headers[i].value);
        h2[i] = (struct th_sigv4_header){names[i], values[i]};
    }
    t = d.in;
    t.headers = h2;
    assert_int_equal(th_sigv4_sign(&t, NULL, NULL, authz, sizeof authz), TH_E_OK);
    assert_string_equal(authz, want);
    json_decref(dv.root);
}

static void expect_inval(const struct th_sigv4_input *in, const char *what)
{
    char authz[512];
    th_err err = th_sigv4_sign(in, NULL, NULL, authz, sizeof authz);
    if (err != TH_E_INVAL)
        fail_msg("%s: got %s, want INVAL", what, th_errname(err));
    assert_string_equal(authz, "");
}

static void test_invalid_input(void **state)
{
    (void)state;
    struct mini m;
    mini_init(&m);
    char authz[512];
    assert_int_equal(th_sigv4_sign(NULL, NULL, NULL, authz, sizeof authz), TH_E_INVAL);
    assert_int_equal(th_sigv4_sign(&m.in, NULL, NULL, NULL, 0), TH_E_INVAL);

    /* every pointer field set to NULL in turn */
    struct th_sigv4_input t;
#define NULL_FIELD(field)                                                                          \
    do {                                                                                           \
        t = m.in;                                                                                  \
        t.field = NULL;                                                                            \
        expect_inval(&t, "NULL " #field);                                                          \
    } while (0)
    NULL_FIELD(method);
    NULL_FIELD(path);
    NULL_FIELD(query);
    NULL_FIELD(headers);
    NULL_FIELD(amz_date);
    NULL_FIELD(region);
    NULL_FIELD(service);
    NULL_FIELD(access_key_id);
    NULL_FIELD(signing_key);
#undef NULL_FIELD
    t = m.in;
    t.body_len = 3; /* body NULL */
    expect_inval(&t, "NULL body with a length");

    /* bad scalar fields */
    static const char *bad_dates[] = {"",
                                      "20150830",
                                      "20150830T123600",
                                      "20150830 123600Z",
                                      "2015083aT123600Z",
                                      "20150830T123600ZZ"};
    for (size_t i = 0; i < sizeof bad_dates / sizeof bad_dates[0]; i++) {
        t = m.in;
        t.amz_date = bad_dates[i];
        expect_inval(&t, bad_dates[i]);
    }
    t = m.in;
    t.method = "";
    expect_inval(&t, "empty method");
    t = m.in;
    t.path = "example";
    expect_inval(&t, "relative path");
    t = m.in;
    t.region = "";
    expect_inval(&t, "empty region");
    t = m.in;
    t.service = "a/b";
    expect_inval(&t, "service with '/'");
    t = m.in;
    t.region = "0123456789012345678901234567890123456789012345678901234567890123"; /* 64 */
    expect_inval(&t, "region too long");
    t = m.in;
    t.access_key_id = "";
    expect_inval(&t, "empty access key id");
    t = m.in;
    t.payload_hash = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
    expect_inval(&t, "uppercase payload hash");
    t = m.in;
    t.payload_hash = "e3b0";
    expect_inval(&t, "short payload hash");

    /* headers */
    t = m.in;
    t.nheaders = 0;
    expect_inval(&t, "no headers");
    m.headers[2] = (struct th_sigv4_header){"", "x"};
    t = m.in;
    t.nheaders = 3;
    expect_inval(&t, "header without a name");
    m.headers[2] = (struct th_sigv4_header){NULL, "x"};
    expect_inval(&t, "NULL header name");
    m.headers[2] = (struct th_sigv4_header){"X-Foo", NULL};
    expect_inval(&t, "NULL header value");
    m.headers[2] = (struct th_sigv4_header){"X Foo", "x"};
    expect_inval(&t, "header name with a space");
    m.headers[2] = (struct th_sigv4_header){"X:Foo", "x"};
    expect_inval(&t, "header name with a colon");
    m.headers[2] = (struct th_sigv4_header){"host", "other.example"};
    expect_inval(&t, "two Host headers");
    m.headers[2] = (struct th_sigv4_header){"X-Amz-Date", "20150830T123601Z"};
    expect_inval(&t, "X-Amz-Date differs from amz_date");
    m.headers[1] = (struct th_sigv4_header){"X-Foo", "x"};
    t.nheaders = 2;
    expect_inval(&t, "no X-Amz-Date");
    mini_init(&m);
    m.headers[0] = (struct th_sigv4_header){"X-Foo", "x"};
    expect_inval(&m.in, "no Host");

    /* 32 headers are fine, 33 too many */
    mini_init(&m);
    static char names[TH_SIGV4_MAX_HEADERS + 1][16];
    for (size_t i = 2; i < TH_SIGV4_MAX_HEADERS + 1; i++) {
        fmt(names[i], sizeof names[i], "X-H%zu", i);
        m.headers[i] = (struct th_sigv4_header){names[i], "v"};
    }
    t = m.in;
    t.nheaders = TH_SIGV4_MAX_HEADERS;
    assert_int_equal(th_sigv4_sign(&t, NULL, NULL, authz, sizeof authz), TH_E_OK);
    t.nheaders = TH_SIGV4_MAX_HEADERS + 1;
    expect_inval(&t, "too many headers");

    /* too many query pairs */
    static char query[8 * (TH_SIGV4_MAX_QUERY + 1)];
    size_t qn = 0;
    for (size_t i = 0; i < TH_SIGV4_MAX_QUERY + 1; i++)
        qn += (size_t)snprintf(query + qn, sizeof query - qn, "%sq%zu=1", i ? "&" : "", i);
    t = m.in;
    t.query = query;
    expect_inval(&t, "too many query pairs");
}

/* Canonical request of the mini request with the given path and query. */
static void canon(const char *path, const char *query, struct th_buf *creq)
{
    struct mini m;
    mini_init(&m);
    m.in.path = path;
    m.in.query = query;
    char authz[512];
    assert_int_equal(th_sigv4_sign(&m.in, creq, NULL, authz, sizeof authz), TH_E_OK);
}

/* Line 2 (canonical URI) and 3 (canonical query) of a canonical request. */
static void expect_canon(const char *path, const char *query, const char *want_uri,
                         const char *want_query)
{
    struct th_buf creq;
    th_buf_init(&creq, 4096);
    canon(path, query, &creq);
    char want[1024];
    fmt(want, sizeof want, "POST\n%s\n%s\nhost:", want_uri, want_query);
    if (strncmp(th_buf_str(&creq), want, strlen(want)) != 0)
        fail_msg("path \"%s\" query \"%s\":\n%s\nwant prefix\n%s", path, query, th_buf_str(&creq),
                 want);
    th_buf_release(&creq);
}

/* Choices the suites leave open, pinned so that they cannot change unnoticed. */
static void test_canonicalisation_choices(void **state)
{
    (void)state;
    expect_canon("", "", "/", "");
    /* a trailing '/' only when the raw path has one (botocore, aws-c-auth; RFC 3986 would
       give "/a/") */
    expect_canon("/a/b/..", "", "/a", "");
    expect_canon("/a/.", "", "/a", "");
    expect_canon("/a/./", "", "/a/", "");
    expect_canon("/../a", "", "/a", "");
    expect_canon("/a//b///c", "", "/a/b/c", "");
    /* the path is already encoded: '%' is encoded again (non-S3 AWS SDK behaviour) */
    expect_canon("/a%20b", "", "/a%2520b", "");
    /* query: decoded then re-encoded with uppercase hex; '+' is literal; "&&" pieces skipped */
    expect_canon("/", "b=%7e&a=%e1%88%b4", "/", "a=%E1%88%B4&b=~");
    expect_canon("/", "a=x+y&a=x y", "/", "a=x%20y&a=x%2By");
    expect_canon("/", "&&c&b=&a==", "/", "a=%3D&b=&c=");
    expect_canon("/", "k=%zz&k=%4", "/", "k=%254&k=%25zz");
    expect_canon("/", "a/b=c/d", "/", "a%2Fb=c%2Fd");
    /* sorting uses the decoded-then-encoded form too: "%7A" is "z" */
    expect_canon("/", "%7A=1&b=2", "/", "b=2&z=1");
    /* a key that is a prefix of another sorts first; then values decide */
    expect_canon("/", "ab=1&a=2&a=1", "/", "a=1&a=2&ab=1");

    /* path segment cap */
    static char deep[4 * (TH_SIGV4_MAX_SEGMENTS + 1) + 1];
    size_t n = 0;
    for (size_t i = 0; i < TH_SIGV4_MAX_SEGMENTS + 1; i++)
        n += (size_t)snprintf(deep + n, sizeof deep - n, "/s");
    struct mini m;
    mini_init(&m);
    m.in.path = deep;
    char authz[512];
    assert_int_equal(th_sigv4_sign(&m.in, NULL, NULL, authz, sizeof authz), TH_E_TOOBIG);
    /* ... but ".." pops, so a long path that stays shallow is fine */
    n = 0;
    for (size_t i = 0; i < TH_SIGV4_MAX_SEGMENTS + 1; i++)
        n += (size_t)snprintf(deep + n, sizeof deep - n, i % 2 ? "/.." : "/s");
    assert_int_equal(th_sigv4_sign(&m.in, NULL, NULL, authz, sizeof authz), TH_E_OK);

    /* header folding and repeats, as in the suite but with CR LF and tabs */
    mini_init(&m);
    m.headers[2] = (struct th_sigv4_header){"My-Header", "\t a \r\n  b\tc  "};
    m.headers[3] = (struct th_sigv4_header){"my-header", ""};
    m.headers[4] = (struct th_sigv4_header){"MY-HEADER", " z "};
    m.in.nheaders = 5;
    struct th_buf creq;
    th_buf_init(&creq, 4096);
    assert_int_equal(th_sigv4_sign(&m.in, &creq, NULL, authz, sizeof authz), TH_E_OK);
    assert_string_equal(th_buf_str(&creq),
                        "POST\n/\n\nhost:example.amazonaws.com\nmy-header:a b c,,z\n"
                        "x-amz-date:20150830T123600Z\n\nhost;my-header;x-amz-date\n" EMPTY_SHA256);
    assert_non_null(strstr(authz, "SignedHeaders=host;my-header;x-amz-date, "));
    th_buf_release(&creq);
}

static void test_amz_date(void **state)
{
    (void)state;
    char out[17];
    th_sigv4_amz_date(1440938160LL, out);
    assert_string_equal(out, "20150830T123600Z");
    th_sigv4_amz_date(951868799LL, out);
    assert_string_equal(out, "20000229T235959Z");
    th_sigv4_amz_date(0, out);
    assert_string_equal(out, "19700101T000000Z");
    th_sigv4_amz_date(-5, out);
    assert_string_equal(out, "19700101T000000Z");
    th_sigv4_amz_date(253402300799LL, out);
    assert_string_equal(out, "99991231T235959Z");
    th_sigv4_amz_date(9000000000000LL, out);
    assert_string_equal(out, "99991231T235959Z");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aws_suite),       cmocka_unit_test(test_suite_sts_token),
        cmocka_unit_test(test_derived),         cmocka_unit_test(test_signing_keys),
        cmocka_unit_test(test_without_outputs), cmocka_unit_test(test_tampering_changes_signature),
        cmocka_unit_test(test_invalid_input),   cmocka_unit_test(test_canonicalisation_choices),
        cmocka_unit_test(test_amz_date),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests: obs/metrics (the registry behind /metrics). The rendered text goes through a strict
 * parser of Prometheus text format 0.0.4 written here: every sample belongs to a family announced
 * by HELP and TYPE before it, label values unescape to what was registered, histogram buckets are
 * cumulative, ascending, end at +Inf and equal _count.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "obs/metrics.h"

/* ---- a strict parser ---- */

#define MAXS 256
#define MAXF 64

struct sample {
    char name[96];
    char family[96];
    int nlabels;
    char lname[6][32];
    char lvalue[6][128];
    double value;
};

struct family {
    char name[96];
    char help[256];
    char type[16];
};

struct parsed {
    struct sample s[MAXS];
    int ns;
    struct family f[MAXF];
    int nf;
};

static struct family *find_family(struct parsed *p, const char *name)
{
    for (int i = 0; i < p->nf; i++)
        if (strcmp(p->f[i].name, name) == 0)
            return &p->f[i];
    return NULL;
}

static bool name_char(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
}

/* Reads a name at *pp into out; fails the test on an empty one. */
static void read_name(const char **pp, char *out, size_t cap)
{
    const char *p = *pp;
    size_t n = 0;
    while (name_char(p[n], n == 0)) {
        assert_true(n + 1 < cap);
        out[n] = p[n];
        n++;
    }
    assert_true(n > 0);
    out[n] = 0;
    *pp = p + n;
}

static double parse_value(const char *s)
{
    if (strcmp(s, "+Inf") == 0)
        return INFINITY;
    if (strcmp(s, "-Inf") == 0)
        return -INFINITY;
    if (strcmp(s, "NaN") == 0)
        return NAN;
    char *end;
    double v = strtod(s, &end);
    assert_true(end != s && *end == 0);
    return v;
}

/* The family a sample belongs to: its name, or a histogram's name without the suffix. */
static const char *family_of(struct parsed *p, const char *name, char *buf, size_t cap)
{
    if (find_family(p, name))
        return name;
    static const char *const sfx[] = {"_bucket", "_sum", "_count"};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(name), k = strlen(sfx[i]);
        if (n > k && strcmp(name + n - k, sfx[i]) == 0 && n - k < cap) {
            memcpy(buf, name, n - k);
            buf[n - k] = 0;
            struct family *f = find_family(p, buf);
            if (f && strcmp(f->type, "histogram") == 0)
                return buf;
        }
    }
    return NULL;
}

static void parse_sample(struct parsed *p, const char *line)
{
    assert_true(p->ns < MAXS);
    struct sample *s = &p->s[p->ns++];
    memset(s, 0, sizeof *s);
    const char *c = line;
    read_name(&c, s->name, sizeof s->name);
    char fam[96];
    const char *f = family_of(p, s->name, fam, sizeof fam);
    if (!f)
        fail_msg("sample %s before its HELP and TYPE", s->name);
    snprintf(s->family, sizeof s->family, "%s", f);
    struct family *fa = find_family(p, f);
    assert_true(fa->help[0] && fa->type[0]);
    if (*c == '{') {
        c++;
        while (*c != '}') {
            assert_true(s->nlabels < 6);
            read_name(&c, s->lname[s->nlabels], sizeof s->lname[0]);
            assert_true(*c++ == '=');
            assert_true(*c++ == '"');
            size_t n = 0;
            char *v = s->lvalue[s->nlabels];
            while (*c != '"') {
                assert_true(*c && n + 1 < sizeof s->lvalue[0]);
                if (*c == '\\') {
                    c++;
                    assert_true(*c == '\\' || *c == '"' || *c == 'n');
                    v[n++] = *c == 'n' ? '\n' : *c;
                } else {
                    assert_true(*c != '\n');
                    v[n++] = *c;
                }
                c++;
            }
            v[n] = 0;
            c++;
            s->nlabels++;
            if (*c == ',')
                c++;
            else
                assert_true(*c == '}');
        }
        c++;
    }
    assert_true(*c++ == ' ');
    s->value = parse_value(c);
}

/* Parses text into p, failing the test at the first line that breaks the format. */
static void parse(const char *text, struct parsed *p)
{
    memset(p, 0, sizeof *p);
    char *copy = strdup(text);
    assert_non_null(copy);
    size_t len = strlen(copy);
    assert_true(len > 0 && copy[len - 1] == '\n'); /* the last line ends too */
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "# HELP ", 7) == 0) {
            const char *c = line + 7;
            char name[96];
            read_name(&c, name, sizeof name);
            assert_true(*c == ' ');
            assert_null(find_family(p, name)); /* HELP first, once */
            assert_true(p->nf < MAXF);
            struct family *f = &p->f[p->nf++];
            snprintf(f->name, sizeof f->name, "%s", name);
            snprintf(f->help, sizeof f->help, "%s", c + 1);
            assert_true(f->help[0]);
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            const char *c = line + 7;
            char name[96];
            read_name(&c, name, sizeof name);
            struct family *f = find_family(p, name);
            assert_non_null(f); /* HELP before TYPE, as the registry writes them */
            assert_true(!f->type[0]);
            assert_true(*c == ' ');
            c++;
            assert_true(strcmp(c, "counter") == 0 || strcmp(c, "gauge") == 0 ||
                        strcmp(c, "histogram") == 0);
            snprintf(f->type, sizeof f->type, "%s", c);
        } else {
            assert_true(line[0] != '#');
            parse_sample(p, line);
        }
    }
    free(copy);
}

static const char *label(const struct sample *s, const char *name)
{
    for (int i = 0; i < s->nlabels; i++)
        if (strcmp(s->lname[i], name) == 0)
            return s->lvalue[i];
    return NULL;
}

/* The value of name with label k=v (k NULL: the sample without labels); fails when absent. */
static double value_of(struct parsed *p, const char *name, const char *k, const char *v)
{
    for (int i = 0; i < p->ns; i++) {
        const struct sample *s = &p->s[i];
        if (strcmp(s->name, name) != 0)
            continue;
        if (!k ? s->nlabels == 0 : (label(s, k) && strcmp(label(s, k), v) == 0))
            return s->value;
    }
    fail_msg("no sample %s{%s=%s}", name, k ? k : "", v ? v : "");
    return 0;
}

/* Every histogram: per series, le ascending, counts cumulative, last le +Inf, = _count. */
static void check_histograms(struct parsed *p)
{
    for (int i = 0; i < p->ns; i++) {
        const struct sample *s = &p->s[i];
        const struct family *f = find_family(p, s->family);
        if (strcmp(f->type, "histogram") != 0 || strcmp(s->name, s->family) == 0)
            continue;
        size_t n = strlen(s->name);
        if (n < 7 || strcmp(s->name + n - 7, "_bucket") != 0)
            continue;
        if (i > 0 && strcmp(p->s[i - 1].name, s->name) == 0)
            continue; /* not the first bucket of its series */
        double prev_le = -INFINITY, prev = 0;
        int k = i;
        for (; k < p->ns && strcmp(p->s[k].name, s->name) == 0; k++) {
            const char *le = label(&p->s[k], "le");
            assert_non_null(le);
            double l = parse_value(le);
            assert_true(l > prev_le);
            assert_true(p->s[k].value >= prev);
            prev_le = l;
            prev = p->s[k].value;
        }
        assert_true(isinf(prev_le) && prev_le > 0);
        /* then _sum and _count of the same series */
        assert_true(k + 1 < p->ns);
        assert_true(strstr(p->s[k].name, "_sum") && strstr(p->s[k + 1].name, "_count"));
        assert_true(p->s[k + 1].value == prev);
    }
}

static char *render(struct th_metrics *m)
{
    struct th_buf b;
    th_buf_init(&b, 1 << 20);
    th_metrics_render(m, &b);
    assert_true(b.len > 0);
    return th_buf_steal(&b);
}

/* ---- tests ---- */

static double seven(void *ud)
{
    (*(int *)ud)++;
    return 7.5;
}

static double start_time(void *ud)
{
    (void)ud;
    return 1796419061.81;
}

static void counters_gauges_functions(void **state)
{
    (void)state;
    struct th_metrics *m;
    assert_int_equal(th_metrics_new(&m), TH_E_OK);
    struct th_metric_family *f, *g, *h;
    const char *const by[] = {"outcome", NULL};
    assert_int_equal(th_metrics_family(m, "t_requests_total", "Requests by outcome.",
                                       TH_METRIC_COUNTER, by, 2, &f),
                     TH_E_OK);
    struct th_counter ok = {0}, bad = {0};
    assert_int_equal(th_metrics_counter(f, (const char *const[]){"ok", NULL}, &ok), TH_E_OK);
    assert_int_equal(th_metrics_counter(f, (const char *const[]){"bad", NULL}, &bad), TH_E_OK);
    th_counter_add(&ok, 41);
    th_counter_inc(&ok);
    th_counter_inc(&bad);
    assert_int_equal(
        th_metrics_family(m, "t_in_flight", "In flight.", TH_METRIC_GAUGE, NULL, 1, &g), TH_E_OK);
    struct th_gauge fl = {0};
    assert_int_equal(th_metrics_gauge(g, NULL, &fl), TH_E_OK);
    th_gauge_add(&fl, 3);
    th_gauge_add(&fl, -5);
    int calls = 0;
    assert_int_equal(th_metrics_family(m, "t_depth", "Sampled.", TH_METRIC_GAUGE, NULL, 1, &h),
                     TH_E_OK);
    assert_int_equal(th_metrics_fn(h, NULL, seven, &calls), TH_E_OK);
    assert_int_equal(th_metrics_family(m, "t_start", "Sampled.", TH_METRIC_GAUGE, NULL, 1, &h),
                     TH_E_OK);
    assert_int_equal(th_metrics_fn(h, NULL, start_time, NULL), TH_E_OK);

    char *text = render(m);
    assert_int_equal(calls, 1); /* sampled once per render */
    struct parsed *p = malloc(sizeof *p);
    parse(text, p);
    assert_int_equal(p->nf, 4);
    assert_string_equal(p->f[0].type, "counter");
    assert_string_equal(p->f[1].type, "gauge");
    assert_true(value_of(p, "t_requests_total", "outcome", "ok") == 42);
    assert_true(value_of(p, "t_requests_total", "outcome", "bad") == 1);
    assert_true(value_of(p, "t_in_flight", NULL, NULL) == -2);
    assert_true(value_of(p, "t_depth", NULL, NULL) == 7.5);
    assert_non_null(strstr(text, "t_in_flight -2\n"));        /* no braces without labels */
    assert_non_null(strstr(text, "t_start 1796419061.81\n")); /* shortest exact digits */
    free(p);
    free(text);
    th_metrics_free(m);
}

static void histogram_cumulative(void **state)
{
    (void)state;
    static const int64_t le_us[] = {5000, 10000, 1000000, 2500000};
    struct th_metrics *m;
    assert_int_equal(th_metrics_new(&m), TH_E_OK);
    struct th_metric_family *f;
    const char *const lab[] = {"provider", NULL};
    assert_int_equal(th_metrics_family(m, "t_seconds", "Latency.", TH_METRIC_HISTOGRAM, lab, 2, &f),
                     TH_E_OK);
    struct th_histogram a, b;
    th_histogram_init(&a, le_us, 4, 1e6);
    th_histogram_init(&b, le_us, 4, 1e6);
    assert_int_equal(th_metrics_histogram(f, (const char *const[]){"a", NULL}, &a), TH_E_OK);
    assert_int_equal(th_metrics_histogram(f, (const char *const[]){"b", NULL}, &b), TH_E_OK);
    /* a bound is inclusive (le): 5000 µs falls in le=0.005 */
    const int64_t obs[] = {1, 5000, 5001, 999999, 2500000, 9000000, -3};
    for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++)
        th_histogram_observe(&a, obs[i]);
    uint64_t count, sum;
    th_histogram_read(&a, &count, &sum);
    assert_int_equal(count, 7);
    assert_int_equal(sum, 1 + 5000 + 5001 + 999999 + 2500000 + 9000000);

    char *text = render(m);
    struct parsed *p = malloc(sizeof *p);
    parse(text, p);
    check_histograms(p);
    /* buckets of series a, in order: 0.005 0.01 1 2.5 +Inf */
    const double want[] = {3, 4, 5, 6, 7};
    int k = 0;
    for (int i = 0; i < p->ns; i++)
        if (strcmp(p->s[i].name, "t_seconds_bucket") == 0 &&
            strcmp(label(&p->s[i], "provider"), "a") == 0) {
            assert_true(k < 5);
            assert_true(p->s[i].value == want[k]);
            k++;
        }
    assert_int_equal(k, 5);
    assert_non_null(strstr(text, "t_seconds_bucket{provider=\"a\",le=\"0.005\"} 3\n"));
    assert_non_null(strstr(text, "t_seconds_bucket{provider=\"a\",le=\"+Inf\"} 7\n"));
    assert_non_null(strstr(text, "t_seconds_sum{provider=\"a\"} 12.510001\n"));
    assert_true(value_of(p, "t_seconds_count", "provider", "a") == 7);
    assert_true(value_of(p, "t_seconds_count", "provider", "b") == 0);
    free(p);
    free(text);
    th_metrics_free(m);
}

static void escaping(void **state)
{
    (void)state;
    struct th_metrics *m;
    assert_int_equal(th_metrics_new(&m), TH_E_OK);
    struct th_metric_family *f;
    const char *const lab[] = {"v", NULL};
    assert_int_equal(th_metrics_family(m, "t_escaped", "A \\ backslash,\na newline.",
                                       TH_METRIC_COUNTER, lab, 1, &f),
                     TH_E_OK);
    const char *odd = "a\"b\\c\nd";
    struct th_counter c = {0};
    assert_int_equal(th_metrics_counter(f, (const char *const[]){odd, NULL}, &c), TH_E_OK);
    char *text = render(m);
    assert_non_null(strstr(text, "# HELP t_escaped A \\\\ backslash,\\na newline.\n"));
    assert_non_null(strstr(text, "t_escaped{v=\"a\\\"b\\\\c\\nd\"} 0\n"));
    struct parsed *p = malloc(sizeof *p);
    parse(text, p);
    assert_int_equal(p->ns, 1);
    assert_string_equal(label(&p->s[0], "v"), odd);
    free(p);
    free(text);
    th_metrics_free(m);
}

/* Label sets are bounded: a family refuses children past its cap, and the same set twice. */
static void bounded_registration(void **state)
{
    (void)state;
    struct th_metrics *m;
    assert_int_equal(th_metrics_new(&m), TH_E_OK);
    struct th_metric_family *f, *again;
    const char *const lab[] = {"reason", NULL};
    assert_int_equal(
        th_metrics_family(m, "t_refusals_total", "Refusals.", TH_METRIC_COUNTER, lab, 2, &f),
        TH_E_OK);
    struct th_counter c[3] = {0};
    assert_int_equal(th_metrics_counter(f, (const char *const[]){"a", NULL}, &c[0]), TH_E_OK);
    assert_int_equal(th_metrics_counter(f, (const char *const[]){"a", NULL}, &c[1]), TH_E_INVAL);
    assert_int_equal(th_metrics_counter(f, (const char *const[]){"b", NULL}, &c[1]), TH_E_OK);
    assert_int_equal(th_metrics_counter(f, (const char *const[]){"c", NULL}, &c[2]), TH_E_OVERLOAD);
    /* wrong arity, wrong cell type, value too long */
    assert_int_equal(th_metrics_counter(f, NULL, &c[2]), TH_E_INVAL);
    struct th_gauge g = {0};
    assert_int_equal(th_metrics_gauge(f, (const char *const[]){"d", NULL}, &g), TH_E_INVAL);
    char longv[TH_METRIC_VALUE_MAX + 1];
    memset(longv, 'x', sizeof longv - 1);
    longv[sizeof longv - 1] = 0;
    assert_int_equal(th_metrics_counter(f, (const char *const[]){longv, NULL}, &c[2]), TH_E_INVAL);
    /* the same family again (a second module): found; another shape: refused */
    assert_int_equal(
        th_metrics_family(m, "t_refusals_total", "Refusals.", TH_METRIC_COUNTER, lab, 9, &again),
        TH_E_OK);
    assert_ptr_equal(again, f);
    assert_int_equal(
        th_metrics_family(m, "t_refusals_total", "Refusals.", TH_METRIC_GAUGE, lab, 2, &again),
        TH_E_INVAL);
    assert_int_equal(
        th_metrics_family(m, "t_refusals_total", "Refusals.", TH_METRIC_COUNTER, NULL, 1, &again),
        TH_E_INVAL);
    /* names, HELP, caps */
    assert_int_equal(th_metrics_family(m, "9bad", "x", TH_METRIC_GAUGE, NULL, 1, &again),
                     TH_E_INVAL);
    assert_int_equal(th_metrics_family(m, "t_nohelp", "", TH_METRIC_GAUGE, NULL, 1, &again),
                     TH_E_INVAL);
    assert_int_equal(th_metrics_family(m, "t_h", "x", TH_METRIC_HISTOGRAM,
                                       (const char *const[]){"le", NULL}, 1, &again),
                     TH_E_INVAL);
    assert_int_equal(th_metrics_family(m, "t_nolabels", "x", TH_METRIC_GAUGE, NULL, 2, &again),
                     TH_E_INVAL);
    char *text = render(m);
    struct parsed *p = malloc(sizeof *p);
    parse(text, p);
    assert_int_equal(p->nf, 1);
    assert_int_equal(p->ns, 2);
    free(p);
    free(text);
    th_metrics_free(m);
}

static void process_metrics(void **state)
{
    (void)state;
    struct th_metrics *m;
    assert_int_equal(th_metrics_new(&m), TH_E_OK);
    assert_int_equal(th_metrics_add_process(m), TH_E_OK);
    assert_int_equal(th_metrics_add_build_info(m, "1.2.3"), TH_E_OK);
    char *text = render(m);
    struct parsed *p = malloc(sizeof *p);
    parse(text, p);
    assert_string_equal(find_family(p, "process_cpu_seconds_total")->type, "counter");
    assert_true(value_of(p, "process_cpu_seconds_total", NULL, NULL) >= 0);
    double rss = value_of(p, "process_resident_memory_bytes", NULL, NULL);
    double vsz = value_of(p, "process_virtual_memory_bytes", NULL, NULL);
    assert_true(rss > 1e5 && vsz >= rss);
    double fds = value_of(p, "process_open_fds", NULL, NULL);
    assert_true(fds >= 3 && fds <= value_of(p, "process_max_fds", NULL, NULL));
    double start = value_of(p, "process_start_time_seconds", NULL, NULL);
    double now = (double)time(NULL);
    assert_true(start > now - 600 && start <= now + 2); /* this test started moments ago */
    assert_true(value_of(p, "telehook_build_info", "version", "1.2.3") == 1);
    free(p);
    free(text);
    th_metrics_free(m);
}

/* Updates from several threads while another renders: no update lost (exact totals). */
#define THREADS 4
#define ADDS    500000

struct shared {
    struct th_counter c;
    struct th_histogram h;
    pthread_barrier_t go; /* every adder starts at once: the adds overlap */
};

static void *adder(void *ud)
{
    struct shared *s = ud;
    pthread_barrier_wait(&s->go);
    for (int i = 0; i < ADDS; i++) {
        th_counter_inc(&s->c);
        th_histogram_observe(&s->h, i % 3);
    }
    return NULL;
}

static void concurrent_updates(void **state)
{
    (void)state;
    static const int64_t le[] = {0, 1};
    struct shared s = {0};
    th_histogram_init(&s.h, le, 2, 1);
    assert_int_equal(pthread_barrier_init(&s.go, NULL, THREADS), 0);
    struct th_metrics *m;
    assert_int_equal(th_metrics_new(&m), TH_E_OK);
    struct th_metric_family *f, *g;
    assert_int_equal(th_metrics_family(m, "t_c_total", "c", TH_METRIC_COUNTER, NULL, 1, &f),
                     TH_E_OK);
    assert_int_equal(th_metrics_counter(f, NULL, &s.c), TH_E_OK);
    assert_int_equal(th_metrics_family(m, "t_h", "h", TH_METRIC_HISTOGRAM, NULL, 1, &g), TH_E_OK);
    assert_int_equal(th_metrics_histogram(g, NULL, &s.h), TH_E_OK);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, adder, &s), 0);
    for (int r = 0; r < 20; r++)
        free(render(m));
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&s.go);
    char *text = render(m);
    struct parsed *p = malloc(sizeof *p);
    parse(text, p);
    check_histograms(p);
    assert_true(value_of(p, "t_c_total", NULL, NULL) == THREADS * ADDS);
    assert_true(value_of(p, "t_h_count", NULL, NULL) == THREADS * ADDS);
    free(p);
    free(text);
    th_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(counters_gauges_functions),
        cmocka_unit_test(histogram_cumulative),
        cmocka_unit_test(escaping),
        cmocka_unit_test(bounded_registration),
        cmocka_unit_test(process_metrics),
        cmocka_unit_test(concurrent_updates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

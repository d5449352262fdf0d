/*
 * Unit tests: cli's option parser (options anywhere, --, --opt=value, errors naming the option);
 * serve's outbox sink (the outbox provider through the real store writer completes on its loop).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/internal.h"
#include "common/arena.h"
#include "common/util.h"
#include "loop/loop.h"
#include "provider/provider.h"
#include "store/store.h"
#include "store/writer.h"

/* main's argv from string literals (argv is not const) */
#define ARGV(...) ((char **)(const char *[]){__VA_ARGS__, NULL})

static void parse_ok(int argc, char **argv, struct th_cli_opts *o)
{
    char err[256] = "";
    if (th_cli_parse(argc, argv, o, err, sizeof err) != TH_E_OK)
        fail_msg("refused: %s", err);
}

static void parse_bad(int argc, char **argv, const char *want)
{
    struct th_cli_opts o;
    char err[256] = "";
    assert_int_equal(th_cli_parse(argc, argv, &o, err, sizeof err), TH_E_INVAL);
    if (!strstr(err, want))
        fail_msg("expected '%s' in '%s'", want, err);
}

static void words(const struct th_cli_opts *o, const char *want)
{
    char got[256] = "";
    for (int i = 0; i < o->npos; i++) {
        strcat(got, i ? " " : "");
        strcat(got, o->pos[i]);
    }
    assert_string_equal(got, want);
}

static void test_options_anywhere(void **state)
{
    (void)state;
    struct th_cli_opts o;
    char **a = ARGV("deliveries", "list", "-n", "5", "-c", "FILE");
    parse_ok(6, a, &o);
    words(&o, "deliveries list");
    assert_string_equal(o.val[TH_OPT_LIMIT], "5");
    assert_string_equal(o.val[TH_OPT_CONFIG], "FILE");
    assert_string_equal(o.spelled[TH_OPT_LIMIT], "-n");

    char **b = ARGV("-c", "FILE", "deliveries", "list");
    parse_ok(4, b, &o);
    words(&o, "deliveries list");
    assert_string_equal(o.val[TH_OPT_CONFIG], "FILE");

    char **c = ARGV("deliveries", "-c", "FILE", "list", "--json");
    parse_ok(5, c, &o);
    words(&o, "deliveries list");
    assert_string_equal(o.val[TH_OPT_JSON], ""); /* a flag */
    assert_null(o.val[TH_OPT_LIMIT]);
}

static void test_value_forms(void **state)
{
    (void)state;
    struct th_cli_opts o;
    char **a =
        ARGV("--limit=7", "--since", "24h", "-n9", "--outcome=", "--claim", "a=1", "--claim=b=2");
    parse_ok(8, a, &o);
    assert_string_equal(o.val[TH_OPT_LIMIT], "9"); /* the last one counts */
    assert_string_equal(o.spelled[TH_OPT_LIMIT], "-n");
    assert_string_equal(o.val[TH_OPT_SINCE], "24h");
    assert_string_equal(o.val[TH_OPT_OUTCOME], ""); /* empty, but given: the command refuses */
    /* every occurrence in order, for repeatable options */
    int claims = 0;
    for (int i = 0; i < o.ngiven; i++)
        if (o.given[i].opt == TH_OPT_CLAIM)
            assert_string_equal(o.given[i].val, claims++ ? "b=2" : "a=1");
    assert_int_equal(claims, 2);
    /* a value may start with '-' */
    char **b = ARGV("--claim", "-x=1");
    parse_ok(2, b, &o);
    assert_string_equal(o.val[TH_OPT_CLAIM], "-x=1");
}

static void test_double_dash_ends_options(void **state)
{
    (void)state;
    struct th_cli_opts o;
    char **a = ARGV("templates", "set", "--force", "--", "en", "sms", "-- {{otp}} --json", "-");
    parse_ok(8, a, &o);
    words(&o, "templates set en sms -- {{otp}} --json -");
    assert_string_equal(o.val[TH_OPT_FORCE], "");
    assert_null(o.val[TH_OPT_JSON]);
    char **b = ARGV("-"); /* "-" alone is an argument */
    parse_ok(1, b, &o);
    words(&o, "-");
}

static void test_errors_name_the_option(void **state)
{
    (void)state;
    parse_bad(2, ARGV("list", "--outcom"), "unknown option '--outcom'");
    parse_bad(2, ARGV("list", "--outcom=x"), "unknown option '--outcom'");
    parse_bad(2, ARGV("list", "-z"), "unknown option '-z'");
    parse_bad(2, ARGV("list", "-n"), "-n needs a value");
    parse_bad(2, ARGV("list", "--since"), "--since needs a value");
    parse_bad(2, ARGV("list", "--json=yes"), "--json takes no value");
    parse_bad(1, ARGV("-hx"), "-h takes no value");
    parse_bad(2, ARGV("set", "-5"), "after --"); /* a hint for values that start with '-' */
    char *many[TH_CLI_MAX_POS + 2];
    for (int i = 0; i <= TH_CLI_MAX_POS; i++)
        many[i] = (char *)"x";
    many[TH_CLI_MAX_POS + 1] = NULL;
    parse_bad(TH_CLI_MAX_POS + 1, many, "too many arguments");
    char *opts[TH_CLI_MAX_GIVEN + 2];
    for (int i = 0; i <= TH_CLI_MAX_GIVEN; i++)
        opts[i] = (char *)"--json";
    opts[TH_CLI_MAX_GIVEN + 1] = NULL;
    parse_bad(TH_CLI_MAX_GIVEN + 1, opts, "too many options");
}

/* Every option of the table can be spelled long; the short ones too; names are unique. */
static void test_table(void **state)
{
    (void)state;
    for (int i = 0; i < TH_OPT__COUNT; i++) {
        const struct th_opt_spec *s = &th_cli_opt_specs[i];
        assert_non_null(s->lname);
        assert_non_null(s->help);
        assert_int_equal(strncmp(th_cli_opt_long[i], "--", 2), 0);
        assert_string_equal(th_cli_opt_long[i] + 2, s->lname);
        for (int j = 0; j < i; j++) {
            assert_string_not_equal(s->lname, th_cli_opt_specs[j].lname);
            if (s->sname && th_cli_opt_specs[j].sname)
                assert_string_not_equal(s->sname, th_cli_opt_specs[j].sname);
        }
        struct th_cli_opts o;
        char arg[64];
        snprintf(arg, sizeof arg, "--%s=%s", s->lname, s->metavar ? "v" : "");
        char *a[] = {s->metavar ? arg : (char *)th_cli_opt_long[i], NULL};
        parse_ok(1, a, &o);
        assert_non_null(o.val[i]);
    }
}

/* ---- serve's outbox sink ---- */

struct sink_run {
    struct th_loop *loop;
    pthread_t loop_thread;
    int dones;
    bool on_loop_thread;
    struct th_send_result res;
    struct th_timer guard;
    int rows;
};

static void sink_done(void *ud, const struct th_send_result *res)
{
    struct sink_run *r = ud;
    r->dones++;
    r->on_loop_thread = pthread_equal(pthread_self(), r->loop_thread);
    r->res = *res;
    th_loop_stop(r->loop);
}

static void sink_guard(void *ud)
{
    th_loop_stop(((struct sink_run *)ud)->loop); /* bounded: the test fails, it does not hang */
}

static int count_row(void *ud, const struct th_outbox_row *row)
{
    struct sink_run *r = ud;
    r->rows++;
    assert_string_equal(row->request_id, "r-sink");
    return 0;
}

/*
 * The outbox provider given serve's sink over a real writer thread: done runs exactly once, on
 * the loop that sent (the writer hands it back there), once the row is committed.
 */
static void test_outbox_sink_completes_on_loop(void **state)
{
    (void)state;
    char dir[] = "/tmp/th-test-XXXXXX", path[64], err[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/sink.db", dir);
    struct th_store *st = NULL;
    struct th_writer *w = NULL;
    assert_int_equal(th_store_open(path, &st, err, sizeof err), TH_E_OK);
    assert_int_equal(th_writer_start(st, 16, &w), TH_E_OK);
    struct th_config cfg;
    char *env[] = {NULL};
    assert_int_equal(th_config_load(&cfg, NULL, env, err, sizeof err), TH_E_OK);
    struct th_outbox_sink sink = th_cli_outbox_sink(w);
    struct th_provider *p = NULL;
    assert_int_equal(th_provider_new("outbox", &cfg, &sink, &p, err, sizeof err), TH_E_OK);
    struct sink_run r = {.loop_thread = pthread_self()};
    assert_int_equal(th_loop_new(&r.loop), TH_E_OK);
    alignas(max_align_t) unsigned char chunk[1024];
    struct th_arena arena;
    th_arena_init(&arena, chunk, sizeof chunk, 16 * 1024);
    struct th_send m = {.request_id = "r-sink",
                        .to = "+12015550123",
                        .region = "US",
                        .channel = TH_CHANNEL_SMS,
                        .language = "en",
                        .body = "Your code is 135791",
                        .voice_id = ""};
    struct th_attempt at = {.loop = r.loop, .sender = "", .timeout_ms = 2000, .arena = &arena};
    assert_int_equal(th_provider_send(p, &at, &m, sink_done, &r), TH_E_OK);
    assert_int_equal(r.dones, 0); /* never inside send */
    th_loop_timer_set(r.loop, &r.guard, th_mono_us() + 5 * 1000000, sink_guard, &r);
    th_loop_run(r.loop);
    assert_int_equal(r.dones, 1);
    assert_true(r.on_loop_thread);
    assert_int_equal(r.res.err, TH_E_OK);
    th_writer_stop(w); /* drains; closes st */
    th_loop_free(r.loop);
    th_provider_free(p);
    th_arena_cleanse_release(&arena);
    assert_int_equal(th_store_open(path, &st, err, sizeof err), TH_E_OK);
    assert_int_equal(th_store_outbox_each(st, 10, count_row, &r), TH_E_OK);
    assert_int_equal(r.rows, 1);
    th_store_close(st);
    th_config_release(&cfg);
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_options_anywhere),
        cmocka_unit_test(test_value_forms),
        cmocka_unit_test(test_double_dash_ends_options),
        cmocka_unit_test(test_errors_name_the_option),
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_outbox_sink_completes_on_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

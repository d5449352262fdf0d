/* Unit tests: guard/conv (conversion tracker: windows, thresholds, modes, blocks, eviction). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/hmac.h"
#include "guard/conv.h"
#include "guard/guard.h"
#include "obs/metrics.h"

static int64_t now_ms = 1700000000000;
static int64_t clock_fn(void *ud)
{
    (void)ud;
    return now_ms;
}

static struct th_hmac_key *mac;

/* A destination: its keys as the hook makes them. */
struct dest {
    char prefix[TH_RECORD_HASH_HEX], phone[TH_RECORD_HASH_HEX], masked[24], country[4];
    struct th_conv_key k;
};

static void dest(struct dest *d, const char *e164, const char *country)
{
    th_guard_record_prefix(mac, e164, d->prefix);
    th_guard_record_phone(mac, e164, d->phone);
    snprintf(d->masked, sizeof d->masked, "%.*s****", (int)strlen(e164) - 4, e164);
    snprintf(d->country, sizeof d->country, "%s", country);
    d->k = (struct th_conv_key){d->prefix, d->phone, d->country, d->masked};
}

static struct th_conv_settings settings(th_conv_mode mode)
{
    return (struct th_conv_settings){.mode = mode,
                                     .require_signal = true,
                                     .window_ms = 3600000,
                                     .prefix_min_sends = 20,
                                     .prefix_min_rate = 10,
                                     .country_min_sends = 200,
                                     .country_min_rate = 10,
                                     .block_minutes = 60,
                                     .max_prefixes = 1024,
                                     .max_verified = 1024};
}

static struct th_conv *make(const struct th_conv_settings *s)
{
    struct th_conv *c;
    assert_int_equal(th_conv_new(s, &c), TH_E_OK);
    th_conv_set_clock(c, clock_fn, NULL);
    return c;
}

/* One request: checked, and sent when not refused. Returns the verdict's kind if refused. */
static th_conv_kind request(struct th_conv *c, const struct dest *d, struct th_conv_verdict *out)
{
    struct th_conv_verdict v;
    th_conv_check(c, &d->k, &v);
    if (out)
        *out = v;
    if (v.refuse)
        return v.kind;
    th_conv_sent(c, &d->k, "aws", "sms");
    return TH_CONV_PASS;
}

static void verify(struct th_conv *c, const struct dest *d, int64_t sent_ms)
{
    struct th_conv_verification v = {d->prefix, d->phone, d->country, "aws",
                                     "sms",     sent_ms,  now_ms};
    th_conv_verified(c, &v);
}

/* The signal: some verification seen lately (a legitimate user elsewhere). */
static void signal(struct th_conv *c)
{
    struct dest d;
    dest(&d, "+12065550100", "US");
    th_conv_sent(c, &d.k, "aws", "sms");
    verify(c, &d, now_ms);
}

static void test_prefix_key(void **state)
{
    (void)state;
    char a[TH_RECORD_HASH_HEX], b[TH_RECORD_HASH_HEX], x[TH_RECORD_HASH_HEX], p[TH_RECORD_HASH_HEX];
    th_guard_record_prefix(mac, "+447700900123", a);
    th_guard_record_prefix(mac, "+447700909999", b);
    th_guard_record_prefix(mac, "+447700910123", x);
    th_guard_record_phone(mac, "+44770090", p);
    assert_string_equal(a, b);     /* only the last 4 digits differ */
    assert_string_not_equal(a, x); /* the fifth from the end differs */
    assert_string_not_equal(a, p); /* labelled apart from a phone key of the same digits */
    assert_int_equal(strlen(a), TH_RECORD_HASH_HEX - 1);
    th_guard_record_prefix(mac, "+1234", p); /* no prefix to keep: not tracked */
    assert_string_equal(p, "");
    struct th_conv_settings s = settings(TH_CONV_ENFORCE);
    struct th_conv *c = make(&s);
    struct th_conv_key k = {p, "", "US", ""};
    th_conv_sent(c, &k, "aws", "sms");
    struct th_conv_stats st;
    th_conv_stats(c, &st);
    assert_int_equal(st.prefixes, 0);
    th_conv_free(c);
}

/* enforce with the signal: exactly prefix_min_sends go, then every request is refused. */
static void test_prefix_block_exact(void **state)
{
    (void)state;
    struct th_conv_settings s = settings(TH_CONV_ENFORCE);
    struct th_conv *c = make(&s);
    signal(c);
    int sent = 0, refused = 0, made = 0;
    for (int i = 0; i < 500; i++) {
        char num[20];
        snprintf(num, sizeof num, "+44770090%04d", i);
        struct dest d;
        dest(&d, num, "GB");
        struct th_conv_verdict v;
        if (request(c, &d, &v) == TH_CONV_PREFIX)
            refused++;
        else
            sent++;
        made += v.new_block;
        now_ms += 100;
    }
    assert_int_equal(sent, 20);
    assert_int_equal(refused, 480);
    assert_int_equal(made, 1);
    struct th_conv_stats st;
    th_conv_stats(c, &st);
    assert_int_equal(st.refused[TH_CONV_PREFIX], 480);
    assert_int_equal(st.would_refuse[TH_CONV_PREFIX], 0);
    assert_int_equal(st.active[TH_CONV_PREFIX], 1);
    assert_int_equal(st.active[TH_CONV_COUNTRY], 0);
    struct th_conv_block b[4];
    assert_int_equal(th_conv_take_blocks(c, b, 4), 1);
    assert_int_equal(b[0].kind, TH_CONV_PREFIX);
    assert_string_equal(b[0].masked, "+44770090****");
    assert_string_equal(b[0].country, "GB");
    assert_string_equal(b[0].mode, "enforce");
    assert_int_equal(b[0].sends, 20);
    assert_int_equal(b[0].verified, 0);
    assert_int_equal(b[0].until_ms - b[0].since_ms, 3600000);
    assert_int_equal(th_conv_take_blocks(c, b, 4), 0);
    /* the block ends after block_minutes; the prefix is judged again on 20 new sends */
    now_ms += 3600000;
    signal(c); /* the signal lasts a window: a new verification */
    struct dest d;
    dest(&d, "+447700901111", "GB");
    sent = 0;
    while (request(c, &d, NULL) == TH_CONV_PASS && sent < 100)
        sent++;
    assert_int_equal(sent, 20);
    th_conv_free(c);
}

/* The rate threshold: 10 % verified passes, below it blocks. */
static void test_rate_threshold(void **state)
{
    (void)state;
    for (int verified = 1; verified <= 2; verified++) {
        struct th_conv_settings s = settings(TH_CONV_ENFORCE);
        struct th_conv *c = make(&s);
        signal(c);
        struct dest d;
        dest(&d, "+33612345678", "FR");
        for (int i = 0; i < 20; i++) {
            assert_int_equal(request(c, &d, NULL), TH_CONV_PASS);
            if (i < verified)
                verify(c, &d, now_ms);
        }
        struct dest other; /* another number of the prefix, never verified */
        dest(&other, "+33612340000", "FR");
        assert_int_equal(request(c, &other, NULL), verified == 2 ? TH_CONV_PASS : TH_CONV_PREFIX);
        th_conv_free(c);
    }
}

/* Without any verification seen, enforce refuses nothing: the event hook may not deliver. */
static void test_no_signal_no_refusal(void **state)
{
    (void)state;
    struct th_conv_settings s = settings(TH_CONV_ENFORCE);
    struct th_conv *c = make(&s);
    struct dest d;
    dest(&d, "+447700900123", "GB");
    for (int i = 0; i < 100; i++)
        assert_int_equal(request(c, &d, NULL), TH_CONV_PASS);
    struct th_conv_stats st;
    th_conv_stats(c, &st);
    assert_false(st.signal);
    assert_int_equal(st.would_refuse[TH_CONV_PREFIX], 80);
    assert_int_equal(st.refused[TH_CONV_PREFIX], 0);
    struct th_conv_block b[2];
    assert_int_equal(th_conv_take_blocks(c, b, 2), 1);
    assert_string_equal(b[0].mode, "monitor");
    /* a verification elsewhere: the block now refuses */
    signal(c);
    assert_int_equal(request(c, &d, NULL), TH_CONV_PREFIX);
    /* the signal lasts a window */
    now_ms += 3600001;
    th_conv_stats(c, &st);
    assert_false(st.signal);
    th_conv_free(c);

    /* require_signal = false: refused from the first block */
    s.require_signal = false;
    c = make(&s);
    int sent = 0;
    while (request(c, &d, NULL) == TH_CONV_PASS && sent < 100)
        sent++;
    assert_int_equal(sent, 20);
    th_conv_free(c);
}

static void test_monitor(void **state)
{
    (void)state;
    struct th_conv_settings s = settings(TH_CONV_MONITOR);
    struct th_conv *c = make(&s);
    signal(c);
    struct dest d;
    dest(&d, "+447700900123", "GB");
    for (int i = 0; i < 50; i++)
        assert_int_equal(request(c, &d, NULL), TH_CONV_PASS);
    struct th_conv_stats st;
    th_conv_stats(c, &st);
    assert_int_equal(st.would_refuse[TH_CONV_PREFIX], 30);
    assert_int_equal(st.refused[TH_CONV_PREFIX], 0);
    assert_int_equal(st.active[TH_CONV_PREFIX], 1);
    th_conv_free(c);

    s = settings(TH_CONV_OFF);
    c = make(&s);
    signal(c);
    for (int i = 0; i < 50; i++)
        assert_int_equal(request(c, &d, NULL), TH_CONV_PASS);
    th_conv_stats(c, &st);
    assert_int_equal(st.would_refuse[TH_CONV_PREFIX], 0);
    assert_int_equal(st.prefixes, 0);
    th_conv_free(c);
}

/*
 * Country after prefix: 20 attacked prefixes of GB are blocked one by one and leave the
 * country's counts, so GB's legitimate users (verifying) are never refused; a spread attack
 * (one send per prefix, under every prefix threshold) is stopped by the country rule.
 */
static void test_country_after_prefix(void **state)
{
    (void)state;
    struct th_conv_settings s = settings(TH_CONV_ENFORCE);
    struct th_conv *c = make(&s);
    signal(c);
    int attack_sent = 0, legit_refused = 0;
    for (int i = 0; i < 10000; i++) {
        char num[20];
        snprintf(num, sizeof num, "+4477%02d90%04d", i % 20, i / 20);
        struct dest d;
        dest(&d, num, "GB");
        attack_sent += request(c, &d, NULL) == TH_CONV_PASS;
        if (i % 10 == 0) { /* a legitimate user of GB, elsewhere in the country */
            snprintf(num, sizeof num, "+4479%02d00%04d", (i / 10) % 50, i / 10);
            dest(&d, num, "GB");
            if (request(c, &d, NULL) != TH_CONV_PASS)
                legit_refused++;
            else
                verify(c, &d, now_ms);
        }
        now_ms += 50;
    }
    assert_int_equal(attack_sent, 400); /* 20 per prefix: 4 % */
    assert_int_equal(legit_refused, 0);
    struct th_conv_stats st;
    th_conv_stats(c, &st);
    assert_int_equal(st.active[TH_CONV_PREFIX], 20);
    assert_int_equal(st.active[TH_CONV_COUNTRY], 0);
    th_conv_free(c);

    c = make(&s);
    signal(c);
    int sent = 0;
    for (int i = 0; i < 1000; i++) {
        char num[20];
        snprintf(num, sizeof num, "+234803%03d1234", i);
        struct dest d;
        dest(&d, num, "NG");
        sent += request(c, &d, NULL) == TH_CONV_PASS;
    }
    assert_int_equal(sent, 200);
    th_conv_stats(c, &st);
    assert_int_equal(st.active[TH_CONV_COUNTRY], 1);
    assert_int_equal(st.refused[TH_CONV_COUNTRY], 800);
    th_conv_free(c);
}

/* A number that verified before is never refused by its prefix's block. */
static void test_verified_exempt(void **state)
{
    (void)state;
    struct th_conv_settings s = settings(TH_CONV_ENFORCE);
    struct th_conv *c = make(&s);
    signal(c);
    struct dest user, d;
    dest(&user, "+447700900001", "GB");
    assert_int_equal(request(c, &user, NULL), TH_CONV_PASS);
    verify(c, &user, now_ms);
    for (int i = 0; i < 40; i++) {
        char num[20];
        snprintf(num, sizeof num, "+44770090%04d", 5000 + i);
        dest(&d, num, "GB");
        request(c, &d, NULL);
    }
    assert_int_equal(request(c, &d, NULL), TH_CONV_PREFIX);
    struct th_conv_verdict v;
    assert_int_equal(request(c, &user, &v), TH_CONV_PASS);
    assert_true(v.exempt);
    assert_int_equal(v.kind, TH_CONV_PREFIX);
    struct th_conv_stats st;
    th_conv_stats(c, &st);
    assert_int_equal(st.exempt, 1);
    th_conv_free(c);
}

/* Buckets: sends age out of the window; a verification counts in its send's bucket. */
static void test_window(void **state)
{
    (void)state;
    struct th_conv_settings s = settings(TH_CONV_ENFORCE);
    struct th_conv *c = make(&s);
    signal(c);
    struct dest d;
    dest(&d, "+4915112345678", "DE");
    for (int i = 0; i < 19; i++)
        assert_int_equal(request(c, &d, NULL), TH_CONV_PASS);
    now_ms += 3600000 + 300000; /* past the window: those 19 are gone */
    signal(c);
    for (int i = 0; i < 20; i++)
        assert_int_equal(request(c, &d, NULL), TH_CONV_PASS);
    /* 20 in the window, none verified: the next is refused... unless 2 verify late, for their
     * sends' bucket (10 minutes later, still in the window) */
    int64_t sent_at = now_ms;
    now_ms += 600000;
    verify(c, &d, sent_at);
    verify(c, &d, sent_at);
    assert_int_equal(request(c, &d, NULL), TH_CONV_PASS);
    /* a verification of a send older than the window credits nothing */
    struct dest e;
    dest(&e, "+4917012345678", "DE");
    int64_t old = now_ms;
    for (int i = 0; i < 10; i++)
        request(c, &e, NULL);
    now_ms += 3600000 + 300000;
    signal(c);
    for (int i = 0; i < 20; i++)
        request(c, &e, NULL);
    verify(c, &e, old);
    verify(c, &e, old);
    struct dest f; /* e itself verified (if late): exempt; its neighbour is not */
    dest(&f, "+4917012340000", "DE");
    assert_int_equal(request(c, &f, NULL), TH_CONV_PREFIX);
    th_conv_free(c);
}

/* Bounded: a flood of new prefixes keeps the table at its size; blocked prefixes stay. */
static void test_eviction(void **state)
{
    (void)state;
    struct th_conv_settings s = settings(TH_CONV_ENFORCE);
    s.max_prefixes = 16;
    struct th_conv *c = make(&s);
    signal(c);
    struct dest b;
    dest(&b, "+447700900123", "GB");
    for (int i = 0; i < 21; i++)
        request(c, &b, NULL);
    assert_int_equal(request(c, &b, NULL), TH_CONV_PREFIX);
    struct th_conv_stats st;
    th_conv_stats(c, &st);
    size_t before = st.prefixes;
    uint64_t evicted = st.evicted;
    for (int i = 0; i < 1000; i++) {
        char num[20];
        snprintf(num, sizeof num, "+7%04d555010", 1000 + i);
        struct dest d;
        dest(&d, num, "RU");
        th_conv_sent(c, &d.k, "aws", "sms");
    }
    th_conv_stats(c, &st);
    assert_true(st.prefixes <= 16);
    assert_int_equal(st.prefixes - before + (st.evicted - evicted), 1000);
    assert_int_equal(request(c, &b, NULL), TH_CONV_PREFIX);
    assert_int_equal(st.bytes >= 16 * 100, true);
    th_conv_free(c);
}

/* Clears: the block goes, and comes back only after prefix_min_sends new sends. */
static void test_clear_and_adopt(void **state)
{
    (void)state;
    struct th_conv_settings s = settings(TH_CONV_ENFORCE);
    struct th_conv *c = make(&s);
    signal(c);
    struct dest d;
    dest(&d, "+447700900123", "GB");
    for (int i = 0; i < 20; i++)
        request(c, &d, NULL);
    assert_int_equal(request(c, &d, NULL), TH_CONV_PREFIX);
    struct th_conv_block b;
    assert_int_equal(th_conv_take_blocks(c, &b, 1), 1);
    /* a clear older than the block does not lift it */
    assert_false(th_conv_clear(c, TH_CONV_PREFIX, d.prefix, b.since_ms - 1));
    assert_true(th_conv_clear(c, TH_CONV_PREFIX, d.prefix, now_ms));
    assert_false(th_conv_clear(c, TH_CONV_PREFIX, d.prefix, now_ms));
    int sent = 0;
    while (request(c, &d, NULL) == TH_CONV_PASS && sent < 100)
        sent++;
    assert_int_equal(sent, 20);

    /* another node's block is adopted: refused at once, without a send here */
    struct dest o;
    dest(&o, "+33612345678", "FR");
    struct th_conv_block other = {
        .kind = TH_CONV_PREFIX, .since_ms = now_ms - 1000, .until_ms = now_ms + 60000};
    snprintf(other.id, sizeof other.id, "cbp-other");
    snprintf(other.key, sizeof other.key, "%s", o.prefix);
    snprintf(other.country, sizeof other.country, "FR");
    assert_true(th_conv_adopt(c, &other));
    assert_false(th_conv_adopt(c, &other)); /* already held */
    assert_int_equal(request(c, &o, NULL), TH_CONV_PREFIX);
    other.until_ms = now_ms - 1; /* an ended block is not taken */
    snprintf(other.key, sizeof other.key, "%s", d.phone);
    assert_false(th_conv_adopt(c, &other));
    /* a country block, cleared by the admin */
    struct th_conv_block cb = {.kind = TH_CONV_COUNTRY, .since_ms = now_ms, .until_ms = now_ms + 1};
    snprintf(cb.key, sizeof cb.key, "NG");
    assert_true(th_conv_adopt(c, &cb));
    struct dest n;
    dest(&n, "+2348031234567", "NG");
    assert_int_equal(request(c, &n, NULL), TH_CONV_COUNTRY);
    assert_true(th_conv_clear(c, TH_CONV_COUNTRY, "NG", now_ms));
    assert_int_equal(request(c, &n, NULL), TH_CONV_PASS);
    th_conv_free(c);
}

/* A blocked prefix leaves its country's counts: later spread sends are judged on their own. */
static void test_blocked_prefix_leaves_country(void **state)
{
    (void)state;
    struct th_conv_settings s = settings(TH_CONV_ENFORCE);
    s.country_min_sends = 12; /* a prefix gives its country at most 20 / 4 = 5 sends */
    struct th_conv *c = make(&s);
    signal(c);
    struct dest d;
    for (int p = 0; p < 2; p++) {
        char num[20];
        snprintf(num, sizeof num, "+2348030%d01234", p);
        dest(&d, num, "NG");
        for (int i = 0; i < 20; i++)
            assert_int_equal(request(c, &d, NULL), TH_CONV_PASS);
        assert_int_equal(request(c, &d, NULL), TH_CONV_PREFIX);
    }
    for (int i = 0; i < 11; i++) { /* 11 new prefixes, one send each: under 12 */
        char num[20];
        snprintf(num, sizeof num, "+234805%03d1234", i);
        dest(&d, num, "NG");
        assert_int_equal(request(c, &d, NULL), TH_CONV_PASS);
    }
    struct th_conv_stats st;
    th_conv_stats(c, &st);
    assert_int_equal(st.active[TH_CONV_COUNTRY], 0);
    th_conv_free(c);
}

/* A verification counts in its send's bucket, and leaves the window with it. */
static void test_verified_in_send_bucket(void **state)
{
    (void)state;
    struct th_conv_settings s = settings(TH_CONV_ENFORCE);
    struct th_conv *c = make(&s);
    signal(c);
    struct dest d, other;
    dest(&d, "+5511987654321", "BR");
    dest(&other, "+5511987650000", "BR");
    int64_t t0 = now_ms;
    for (int i = 0; i < 20; i++)
        assert_int_equal(request(c, &d, NULL), TH_CONV_PASS);
    now_ms = t0 + 55 * 60000;
    verify(c, &d, t0);
    verify(c, &d, t0);
    assert_int_equal(request(c, &other, NULL), TH_CONV_PASS); /* 2 of 20: 10 % */
    now_ms = t0 + 61 * 60000; /* t0's bucket, its sends and its verifications are gone */
    for (int i = 0; i < 19; i++)
        assert_int_equal(request(c, &other, NULL), TH_CONV_PASS);
    assert_int_equal(request(c, &other, NULL), TH_CONV_PREFIX);
    th_conv_free(c);
}

/* When a block ends, the prefix is judged on new sends only (the block zeroed its counts). */
static void test_block_end_starts_again(void **state)
{
    (void)state;
    struct th_conv_settings s = settings(TH_CONV_ENFORCE);
    s.block_minutes = 10; /* shorter than the window: the old sends are still in it */
    struct th_conv *c = make(&s);
    signal(c);
    struct dest d;
    dest(&d, "+61412345678", "AU");
    for (int i = 0; i < 20; i++)
        assert_int_equal(request(c, &d, NULL), TH_CONV_PASS);
    assert_int_equal(request(c, &d, NULL), TH_CONV_PREFIX);
    now_ms += 11 * 60000;
    int sent = 0;
    while (request(c, &d, NULL) == TH_CONV_PASS && sent < 100)
        sent++;
    assert_int_equal(sent, 20);
    th_conv_free(c);
}

static void test_metrics(void **state)
{
    (void)state;
    struct th_conv_settings s = settings(TH_CONV_ENFORCE);
    struct th_conv *c = make(&s);
    struct th_metrics *m;
    assert_int_equal(th_metrics_new(&m), TH_E_OK);
    struct dest d;
    dest(&d, "+447700900123", "GB");
    th_conv_sent(c, &d.k, "twilio", "sms"); /* before the registry: registered with it */
    assert_int_equal(th_conv_metrics(c, m), TH_E_OK);
    th_conv_sent(c, &d.k, "twilio", "sms");
    th_conv_sent(c, &d.k, "twilio", "voice");
    verify(c, &d, now_ms);
    struct th_buf out;
    th_buf_init(&out, 1 << 20);
    th_metrics_render(m, &out);
    const char *text = th_buf_str(&out);
    assert_non_null(strstr(text,
                           "telehook_conversion_sent_total{country=\"GB\",provider=\"twilio\","
                           "channel=\"sms\"} 2\n"));
    assert_non_null(strstr(text,
                           "telehook_conversion_sent_total{country=\"GB\",provider=\"twilio\","
                           "channel=\"voice\"} 1\n"));
    assert_non_null(strstr(text, "telehook_conversion_verified_total{country=\"GB\",provider="
                                 "\"aws\",channel=\"sms\"} 1\n"));
    assert_non_null(strstr(text, "telehook_conversion_signal 1\n"));
    /* bounded: 60 countries give 40 and "other" */
    for (int i = 0; i < 60; i++) {
        char cc[3] = {(char)('A' + i / 26), (char)('A' + i % 26), 0};
        struct dest x;
        dest(&x, "+12065550100", cc);
        th_conv_sent(c, &x.k, "twilio", "sms");
    }
    th_buf_reset(&out);
    th_metrics_render(m, &out);
    assert_non_null(strstr(th_buf_str(&out), "country=\"other\",provider=\"twilio\",channel="
                                             "\"sms\"} 21\n"));
    th_buf_release(&out);
    th_metrics_free(m);
    th_conv_free(c);
}

/* A prefix's 16-bit counts saturate rather than wrap: 70,000 sends in one bucket count 65,535,
 * still judged (a wrapped count, 4,464, would fall below prefix_min_sends and pass). */
static void test_prefix_counts_saturate(void **state)
{
    (void)state;
    struct th_conv_settings s = settings(TH_CONV_ENFORCE);
    s.prefix_min_sends = 60000;
    s.country_min_sends = 0;
    struct th_conv *c = make(&s);
    signal(c);
    struct dest d;
    dest(&d, "+447700900123", "GB");
    for (int i = 0; i < 70000; i++)
        th_conv_sent(c, &d.k, "aws", "sms");
    struct th_conv_verdict v;
    assert_int_equal(request(c, &d, &v), TH_CONV_PREFIX);
    assert_true(v.new_block);
    struct th_conv_block b;
    assert_int_equal(th_conv_take_blocks(c, &b, 1), 1);
    assert_int_equal(b.sends, 65535);
    assert_int_equal(b.verified, 0);
    th_conv_free(c);
}

int main(void)
{
    assert_int_equal(th_guard_record_key_new("unit test secret", &mac), TH_E_OK);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefix_key),
        cmocka_unit_test(test_prefix_block_exact),
        cmocka_unit_test(test_rate_threshold),
        cmocka_unit_test(test_no_signal_no_refusal),
        cmocka_unit_test(test_monitor),
        cmocka_unit_test(test_country_after_prefix),
        cmocka_unit_test(test_verified_exempt),
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_eviction),
        cmocka_unit_test(test_clear_and_adopt),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_blocked_prefix_leaves_country),
        cmocka_unit_test(test_verified_in_send_bucket),
        cmocka_unit_test(test_block_end_starts_again),
        cmocka_unit_test(test_prefix_counts_saturate),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    th_hmac_key_free(mac);
    return rc;
}

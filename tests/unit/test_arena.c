/* Unit tests: common/arena (per-request pool: embedded first chunk, cap, alignment, cleanse). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdalign.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/arena.h"
#include "common/buf.h"

static bool inside(const void *p, const void *base, size_t size)
{
    return (uintptr_t)p >= (uintptr_t)base && (uintptr_t)p < (uintptr_t)base + size;
}

static bool all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* A normal request never leaves the embedded chunk: no malloc. */
static void test_first_chunk_embedded(void **state)
{
    (void)state;
    alignas(max_align_t) unsigned char mem[1024];
    struct th_arena a;
    th_arena_init(&a, mem, sizeof mem, 1 << 20);
    char *s = th_arena_strdup(&a, "hello");
    char *t = th_arena_strndup(&a, "worldwide", 5);
    assert_non_null(s);
    assert_non_null(t);
    assert_string_equal(s, "hello");
    assert_string_equal(t, "world");
    assert_true(inside(s, mem, sizeof mem));
    assert_true(inside(t, mem, sizeof mem));
    assert_ptr_not_equal(s, t);
    assert_null(a.head); /* nothing malloc'd */
    th_arena_cleanse_release(&a);
}

static void test_aligned(void **state)
{
    (void)state;
    unsigned char mem[512];
    struct th_arena a;
    th_arena_init(&a, mem + 1, sizeof mem - 1, 1 << 20); /* a misaligned start is aligned */
    for (size_t n = 1; n < 40; n += 3) {
        void *p = th_arena_alloc(&a, n);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % TH_ARENA_ALIGN, 0);
    }
    void *big = th_arena_alloc(&a, 5000); /* an extra chunk, aligned too */
    assert_non_null(big);
    assert_int_equal((uintptr_t)big % TH_ARENA_ALIGN, 0);
    th_arena_cleanse_release(&a);
}

/* Past the first chunk: malloc'd chunks, distinct memory, still usable; then the cap. */
static void test_grows_then_caps(void **state)
{
    (void)state;
    alignas(max_align_t) unsigned char mem[256];
    struct th_arena a;
    th_arena_init(&a, mem, sizeof mem, 256 + 8192);
    void *p1 = th_arena_alloc(&a, 200);
    assert_true(inside(p1, mem, sizeof mem));
    void *p2 = th_arena_alloc(&a, 200); /* does not fit the rest of the first chunk */
    assert_non_null(p2);
    assert_false(inside(p2, mem, sizeof mem));
    memset(p2, 'x', 200);
    void *p3 = th_arena_alloc(&a, 3000); /* the same extra chunk (4096) */
    assert_non_null(p3);
    memset(p3, 'y', 3000);
    assert_null(th_arena_alloc(&a, 8192)); /* beyond the cap: refused cleanly */
    void *p4 = th_arena_alloc(&a, 4000);   /* what the cap still allows */
    assert_non_null(p4);
    memset(p4, 'z', 4000);
    assert_null(th_arena_alloc(&a, 1000));
    assert_null(th_arena_alloc(&a, SIZE_MAX)); /* overflow refused */
    assert_true(th_arena_used(&a) >= 200 + 200 + 3000 + 4000);
    th_arena_cleanse_release(&a);
    /* usable again, from the first chunk */
    void *p5 = th_arena_alloc(&a, 10);
    assert_true(inside(p5, mem, sizeof mem));
    assert_int_equal(th_arena_used(&a), TH_ARENA_ALIGN);
    th_arena_cleanse_release(&a);
}

/* Every byte handed out from the embedded chunk is wiped by the release: the OTP is gone. */
static void test_cleanse(void **state)
{
    (void)state;
    alignas(max_align_t) unsigned char mem[512];
    memset(mem, 0, sizeof mem);
    struct th_arena a;
    th_arena_init(&a, mem, sizeof mem, 1 << 20);
    char *otp = th_arena_strdup(&a, "246810");
    char *text = th_arena_strdup(&a, "Your code is 246810");
    assert_non_null(otp);
    assert_non_null(text);
    assert_non_null(memmem(mem, sizeof mem, "246810", 6));
    th_arena_cleanse_release(&a);
    assert_true(all_zero(mem, sizeof mem));

    /* with extra chunks the first is wiped whole */
    memset(mem, 0, sizeof mem);
    th_arena_init(&a, mem, sizeof mem, 1 << 20);
    otp = th_arena_strdup(&a, "135791");
    assert_non_null(th_arena_alloc(&a, 600));
    assert_non_null(th_arena_alloc(&a, 5000));
    th_arena_cleanse_release(&a);
    assert_true(all_zero(mem, sizeof mem));
    th_arena_cleanse_release(NULL);
}

/* No first chunk: every allocation comes from malloc'd chunks, within the cap. */
static void test_no_first_chunk(void **state)
{
    (void)state;
    struct th_arena a;
    th_arena_init(&a, NULL, 0, 100);
    assert_null(th_arena_alloc(&a, 200));
    char *s = th_arena_strdup(&a, "abc");
    assert_non_null(s);
    assert_string_equal(s, "abc");
    assert_non_null(th_arena_calloc(&a, 16));
    th_arena_cleanse_release(&a);
}

/* A th_buf over arena memory: capped, never reallocated (it would free arena memory). */
static void test_buf(void **state)
{
    (void)state;
    alignas(max_align_t) unsigned char mem[256];
    struct th_arena a;
    th_arena_init(&a, mem, sizeof mem, 4096);
    struct th_buf b;
    assert_int_equal(th_arena_buf(&a, &b, 8), TH_E_OK);
    char *data = b.data;
    assert_true(inside(data, mem, sizeof mem));
    assert_string_equal(th_buf_str(&b), "");
    assert_int_equal(th_buf_appends(&b, "12345678"), TH_E_OK);
    assert_string_equal(th_buf_str(&b), "12345678");
    assert_int_equal(th_buf_appendc(&b, '9'), TH_E_TOOBIG);
    assert_ptr_equal(b.data, data); /* failed (sticky, emptied), never reallocated */
    assert_int_equal(th_buf_err(&b), TH_E_TOOBIG);
    assert_int_equal(th_arena_buf(&a, &b, 8192), TH_E_NOMEM); /* over the cap */
    th_arena_cleanse_release(&a);
}

/*
 * A reserved arena buffer (a provider's body): appends within the reserve take no more of the
 * arena; past it the buffer grows within the arena — in place while it is the newest
 * allocation, else moved with its content — never through realloc or free (arena memory);
 * release only forgets it, steal hands a heap copy, and the bytes are wiped with the arena.
 */
static void test_buf_reserve_grows_in_arena(void **state)
{
    (void)state;
    alignas(max_align_t) unsigned char mem[1024];
    memset(mem, 0, sizeof mem);
    struct th_arena a;
    th_arena_init(&a, mem, sizeof mem, 1 << 16);
    struct th_buf b;
    assert_int_equal(th_arena_buf_reserve(&a, &b, 40, 4000), TH_E_OK);
    char *data = b.data;
    size_t used = th_arena_used(&a);
    assert_true(inside(data, mem, sizeof mem));
    assert_int_equal(th_buf_appends(&b, "0123456789012345678901234567890123456789"), TH_E_OK);
    assert_ptr_equal(b.data, data);
    assert_int_equal(th_arena_used(&a), used); /* within the reserve: nothing more */

    /* past the reserve, still the newest allocation: extended where it is */
    assert_int_equal(th_buf_appends(&b, "+code 246810"), TH_E_OK);
    assert_ptr_equal(b.data, data);
    assert_true(th_arena_used(&a) > used);
    assert_string_equal(th_buf_str(&b), "0123456789012345678901234567890123456789+code 246810");

    /* something else allocated after it: the next growth moves it, content kept */
    char *other = th_arena_strdup(&a, "other");
    assert_non_null(other);
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(th_buf_appends(&b, big), TH_E_OK);
    assert_ptr_not_equal(b.data, data);
    assert_true(inside(b.data, mem, sizeof mem)); /* still the arena's */
    assert_int_equal(b.len, 52 + 299);
    assert_memory_equal(b.data, "0123456789012345678901234567890123456789+code 246810", 52);
    assert_string_equal(other, "other");

    /* past the first chunk: a chunk of the arena, never the heap's realloc */
    for (int i = 0; i < 6; i++)
        assert_int_equal(th_buf_appends(&b, big), TH_E_OK);
    assert_int_equal(b.len, 52 + 7 * 299);
    assert_memory_equal(b.data, "0123456789", 10);

    char *copy = th_buf_steal(&b); /* a heap copy: the arena keeps its bytes */
    assert_non_null(copy);
    assert_int_equal(strlen(copy), 52 + 7 * 299);
    free(copy);
    assert_int_equal(th_buf_appends(&b, "again"), TH_E_OK); /* still the arena's */
    th_buf_release(&b);                                     /* forgets: no free */
    assert_null(b.data);
    assert_int_equal(th_buf_appends(&b, big), TH_E_OK);
    assert_int_equal(th_buf_appends(&b, big), TH_E_OK);
    th_buf_release(&b);

    /* the cap still holds */
    assert_int_equal(th_arena_buf_reserve(&a, &b, 10, 20), TH_E_OK);
    assert_int_equal(th_buf_appends(&b, "123456789012345678901"), TH_E_TOOBIG);
    th_arena_cleanse_release(&a);
    assert_true(all_zero(mem, sizeof mem)); /* the code is wiped with the arena */
}

/*
 * Fitting a rendered text to its bytes: the reserve's tail goes back to the arena (the next
 * allocation starts right after the text) and is wiped; the text keeps its bytes and can grow
 * again. Not the newest allocation, or no arena: nothing changes.
 */
static void test_buf_fit(void **state)
{
    (void)state;
    alignas(max_align_t) unsigned char mem[2048];
    memset(mem, 0, sizeof mem);
    struct th_arena a;
    th_arena_init(&a, mem, sizeof mem, 1 << 16);
    struct th_buf b;
    assert_int_equal(th_arena_buf(&a, &b, 1024), TH_E_OK);
    size_t before = th_arena_used(&a);
    assert_int_equal(th_buf_appends(&b, "Your code is 246810 and some words to cut"), TH_E_OK);
    /* bytes written past the text and then cut (a renderer that rewinds): wiped by the fit */
    memset(b.data + 100, 'Z', 200);
    b.len = 19;
    b.data[19] = '\0';
    th_arena_buf_fit(&b);
    size_t after = th_arena_used(&a);
    assert_true(after < before);
    assert_true(after <= before - 1024 + 19 + 1 + TH_ARENA_ALIGN);
    assert_string_equal(th_buf_str(&b), "Your code is 246810");
    for (size_t i = 100; i < 300; i++)
        assert_int_not_equal(mem[i], 'Z');
    char *next = th_arena_strdup(&a, "next");
    assert_true(next > b.data && next < b.data + 19 + 1 + TH_ARENA_ALIGN); /* right after it */
    assert_int_equal(th_buf_appends(&b, ", more"), TH_E_OK); /* grows by a copy: intact */
    assert_string_equal(th_buf_str(&b), "Your code is 246810, more");
    assert_string_equal(next, "next");

    /* not the newest allocation: nothing moves */
    struct th_buf c;
    assert_int_equal(th_arena_buf(&a, &c, 256), TH_E_OK);
    assert_int_equal(th_buf_appends(&c, "short"), TH_E_OK);
    assert_non_null(th_arena_strdup(&a, "after"));
    size_t used = th_arena_used(&a), cap = c.cap;
    th_arena_buf_fit(&c);
    assert_int_equal(th_arena_used(&a), used);
    assert_int_equal(c.cap, cap);

    /* a heap buffer: untouched */
    struct th_buf h;
    th_buf_init(&h, 64);
    assert_int_equal(th_buf_appends(&h, "heap"), TH_E_OK);
    cap = h.cap;
    th_arena_buf_fit(&h);
    assert_int_equal(h.cap, cap);
    th_buf_release(&h);
    th_arena_cleanse_release(&a);
    assert_true(all_zero(mem, sizeof mem));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_chunk_embedded),
        cmocka_unit_test(test_aligned),
        cmocka_unit_test(test_grows_then_caps),
        cmocka_unit_test(test_cleanse),
        cmocka_unit_test(test_no_first_chunk),
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_buf_reserve_grows_in_arena),
        cmocka_unit_test(test_buf_fit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

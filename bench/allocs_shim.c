/*
 * LD_PRELOAD shim for bench/allocs.sh: counts heap allocations (malloc, calloc, realloc,
 * posix_memalign, aligned_alloc; strdup and C++ new arrive here through malloc) and sorts them by
 * who asked: the first caller frame outside the C library, the C++ runtime and this shim is either
 * in the telehook executable (telehook's own, its static libraries included) or elsewhere
 * (third party: libmicrohttpd, libcurl, OpenSSL, SQLite, libphonenumber ...). The totals are
 * written to $ALLOCS_OUT at exit. A measuring tool only: not part of the server.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static int (*real_memalign)(void **, size_t, size_t);
static void *(*real_aligned)(size_t, size_t);

static atomic_ullong own, third;
/* ALLOCS_SITES=file: telehook's own allocation sites (caller addresses) and their counts too */
#define NSITES 4096
static _Atomic uintptr_t site_addr[NSITES];
static atomic_ullong site_count[NSITES];

static void site(uintptr_t a)
{
    for (size_t i = (a >> 4) % NSITES, n = 0; n < NSITES; i = (i + 1) % NSITES, n++) {
        uintptr_t cur = atomic_load(&site_addr[i]);
        if (cur == 0) {
            uintptr_t zero = 0;
            if (!atomic_compare_exchange_strong(&site_addr[i], &zero, a) && zero != a)
                continue;
            cur = a;
        }
        if (cur == a) {
            atomic_fetch_add(&site_count[i], 1);
            return;
        }
    }
}
static __thread int busy;
static uintptr_t exe_lo, exe_hi;         /* the executable's code */
static uintptr_t exe_base;               /* its load address (sites are printed relative to it) */
static uintptr_t skip_lo[8], skip_hi[8]; /* libc, libstdc++, libgcc_s, this shim */
static int nskip;
static char bootstrap[1 << 16]; /* dlsym's own allocations, before the real ones */
static size_t boot_used;

static void ranges(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return;
    char line[512], exe[256] = "";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi, off;
        char perm[8], path[400] = "";
        if (sscanf(line, "%lx-%lx %7s %lx %*s %*s %399[^\n]", &lo, &hi, perm, &off, path) < 4 ||
            perm[2] != 'x')
            continue;
        if (exe[0] && strcmp(path, exe) == 0) {
            if (!exe_lo || lo < exe_lo) {
                exe_lo = lo;
                exe_base = lo - off;
            }
            if (hi > exe_hi)
                exe_hi = hi;
        } else if (nskip < 8 && (strstr(path, "/libc.so") || strstr(path, "/libstdc++") ||
                                 strstr(path, "/libgcc_s") || strstr(path, "allocs_shim"))) {
            skip_lo[nskip] = lo;
            skip_hi[nskip++] = hi;
        }
    }
    fclose(f);
}

static int skipped(uintptr_t a)
{
    for (int i = 0; i < nskip; i++)
        if (a >= skip_lo[i] && a < skip_hi[i])
            return 1;
    return 0;
}

static void note(void)
{
    if (busy)
        return;
    busy = 1;
    if (!exe_hi)
        ranges();
    void *fr[16];
    int n = backtrace(fr, 16);
    int mine = 0;
    for (int i = 0; i < n; i++) {
        uintptr_t a = (uintptr_t)fr[i];
        if (skipped(a))
            continue;
        mine = a >= exe_lo && a < exe_hi;
        if (mine)
            site(a - exe_base);
        break;
    }
    atomic_fetch_add(mine ? &own : &third, 1);
    busy = 0;
}

static void init(void)
{
    if (real_malloc)
        return;
    busy = 1;
    real_malloc = dlsym(RTLD_NEXT, "malloc");
    real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_realloc = dlsym(RTLD_NEXT, "realloc");
    real_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned = dlsym(RTLD_NEXT, "aligned_alloc");
    busy = 0;
}

static void *boot(size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (boot_used + n > sizeof bootstrap)
        return NULL;
    void *p = bootstrap + boot_used;
    boot_used += n;
    return p;
}

void *malloc(size_t n)
{
    if (!real_malloc) {
        if (busy)
            return boot(n);
        init();
    }
    note();
    return real_malloc(n);
}

void *calloc(size_t a, size_t b)
{
    if (!real_calloc) {
        if (busy)
            return boot(a * b); /* static: already zero */
        init();
    }
    note();
    return real_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    if (!real_realloc)
        init();
    note();
    return real_realloc(p, n);
}

void free(void *p)
{
    static void (*real_free)(void *);
    if ((char *)p >= bootstrap && (char *)p < bootstrap + sizeof bootstrap)
        return;
    if (!real_free)
        real_free = dlsym(RTLD_NEXT, "free");
    real_free(p);
}

int posix_memalign(void **out, size_t al, size_t n)
{
    if (!real_memalign)
        init();
    note();
    return real_memalign(out, al, n);
}

void *aligned_alloc(size_t al, size_t n)
{
    if (!real_aligned)
        init();
    note();
    return real_aligned(al, n);
}

__attribute__((destructor)) static void report(void)
{
    const char *out = getenv("ALLOCS_OUT");
    if (!out)
        return;
    FILE *f = fopen(out, "w");
    if (!f)
        return;
    fprintf(f, "%llu %llu\n", (unsigned long long)atomic_load(&own),
            (unsigned long long)atomic_load(&third));
    fclose(f);
    const char *sites = getenv("ALLOCS_SITES");
    if (!sites || !(f = fopen(sites, "w")))
        return;
    for (size_t i = 0; i < NSITES; i++) /* offsets in the executable's mapping */
        if (atomic_load(&site_addr[i]))
            fprintf(f, "%llu 0x%lx\n", (unsigned long long)atomic_load(&site_count[i]),
                    (unsigned long)atomic_load(&site_addr[i]));
    fclose(f);
}

/* A scratch directory per test program: created by setup, removed with its content by teardown. */
#ifndef TH_TESTS_TMPDIR_H
#define TH_TESTS_TMPDIR_H

#include <stdio.h>
#include <stdlib.h>

static char tmpdir[] = "/tmp/th-test-XXXXXX";

static int tmpdir_setup(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int tmpdir_teardown(void **state)
{
    (void)state;
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

#endif

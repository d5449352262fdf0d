/*
 * libFuzzer: the configuration parser (INI through libinih, every key's validation, secrets from
 * files). A configuration is trusted input, but a typo must give a clear error, never a crash.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0])
        snprintf(path, sizeof path, "/tmp/th-fuzz-config-%d.conf", (int)getpid());
    FILE *f = fopen(path, "w");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    char *env[] = {NULL};
    struct th_config cfg;
    char err[512];
    if (th_config_load(&cfg, path, env, err, sizeof err) == TH_E_OK) {
        th_config_check_serve(&cfg, err, sizeof err);
        FILE *out = fopen("/dev/null", "w");
        if (out) {
            th_config_print(&cfg, out);
            fclose(out);
        }
        th_config_release(&cfg);
    } else if (!err[0]) {
        __builtin_trap(); /* a refusal always says why */
    }
    return 0;
}

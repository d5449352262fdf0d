/*
 * libFuzzer: the request framing checks (src/http/framing.c) on header sections split the way
 * libmicrohttpd 0.9 splits them (tests/unit/mhd_split.h). The checks walk pointers over the
 * section: ASan proves they never read outside it. A served request hides nothing behind a NUL:
 * in its field lines a NUL is followed by nothing but NULs and CRs up to the line's LF (such NULs
 * before a bare LF look like a CR, and hide no byte). (The request line is not checked:
 * libmicrohttpd decodes the target in place, %00 included.)
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/mhd_split.h"
#include "http/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct mhd_split s;
    if (size > 16384)
        return 0;
    char *buf = malloc(size ? size : 1); /* exactly the input: ASan sees any overread */
    memcpy(buf, data, size);
    if (mhd_split(buf, size, &s)) {
        int status = 0;
        const char *why = mhd_split_check(&s, &status);
        if (why && status != 400 && status != 501)
            __builtin_trap();
        if (!why) { /* served: no byte other than NUL or CR after a NUL in a field line */
            const uint8_t *end = data + s.header_size;
            const uint8_t *p = memchr(data, '\n', s.header_size);
            bool nul = false;
            for (p = p ? p + 1 : end; p < end; p++) {
                if (*p == '\n')
                    nul = false;
                else if (*p == '\0')
                    nul = true;
                else if (nul && *p != '\r')
                    __builtin_trap();
            }
        }
    }
    free(buf);
    return 0;
}

/*
 * credential_process (AWS shared config): run a command, read credentials from its standard
 * output. The command runs as `/bin/sh -c COMMAND` — as the AWS CLI does on POSIX, so quoting
 * and $VARIABLES behave as the operator tested them in a shell — with the server's environment,
 * stdin from /dev/null, in a process group of its own (a timeout kills the whole group, the
 * shell's children too), and no other descriptor of the server (listening sockets, the store).
 *
 * Its standard output holds secrets: it is never logged, and wiped after use. Standard error is
 * for people: its last line (cut, printable ASCII) is quoted in the error when the process fails.
 */
#ifndef TH_AWS_PROCESS_H
#define TH_AWS_PROCESS_H

#include <stdbool.h>
#include <stddef.h>

#include "aws/creds.h"
#include "common/buf.h"
#include "common/err.h"

#define TH_AWS_PROCESS_TIMEOUT_MS 10000
#define TH_AWS_PROCESS_MAX_OUTPUT (64 * 1024)

/*
 * Runs command and collects its standard output into out (reset first; capped by out's max:
 * more is an error). Waits at most timeout_ms; stop (may be NULL), polled every 100 ms, cuts it
 * short. TH_E_OK only when the process exited with status 0. TH_E_TIMEOUT, TH_E_TOOBIG,
 * TH_E_BUSY (stopped) or TH_E_IO otherwise, with the reason in why (never the output).
 */
th_err th_aws_process_run(const char *command, long timeout_ms, bool (*stop)(void *), void *ud,
                          struct th_buf *out, char *why, size_t whylen);

/*
 * {"Version": 1, "AccessKeyId", "SecretAccessKey", "SessionToken"?, "Expiration"?} → out
 * (expires_ms 0 when no Expiration: the credentials do not expire). TH_E_INVAL with the reason
 * in why (never a value) for anything else.
 */
th_err th_aws_process_parse(const char *json, size_t len, struct th_aws_credentials *out, char *why,
                            size_t whylen);

#endif

/*
 * The dead-letter queue's sealing: what no attempt delivered is kept so an operator can see why
 * and replay it while the code is still valid — but the message text holds the OTP, so that
 * part (the payload) is sealed with AES-256-GCM under a key from the configuration
 * ([dlq] key_file or TELEHOOK_DLQ_KEY(_FILE)). The key id is stored with each entry, so keys can
 * be rotated: new entries use [dlq] key, older ones still open with [dlq] previous_key. The
 * entry id is the associated data: a sealed payload cannot be moved to another entry.
 *
 * Without a key, entries are kept without a payload (visible, not replayable).
 */
#ifndef TH_DLQ_DLQ_H
#define TH_DLQ_DLQ_H

#include <stdbool.h>
#include <stddef.h>

#include <stdint.h>

#include "common/err.h"
#include "common/types.h"
#include "config/config.h"

struct th_dlq;

/*
 * TH_E_CONFIG (reason in err) when a key is set but is not 32 bytes in base64 or hex. With
 * [dlq] kms_key_id, the data key is read from kms_data_key_file and opened by KMS Decrypt here
 * (blocking: start-up and the CLI only); TH_E_CONFIG names KMS's reason when it does not open.
 */
th_err th_dlq_new(const struct th_config *cfg, struct th_dlq **out, char *err, size_t errlen);
void th_dlq_free(struct th_dlq *d); /* NULL is a no-op; wipes the keys */

bool th_dlq_enabled(const struct th_dlq *d);
bool th_dlq_can_seal(const struct th_dlq *d);
const char *th_dlq_key_id(const struct th_dlq *d); /* "" without a key */

/* nonce (12) || ciphertext || tag (16), malloc'ed in *out. */
th_err th_dlq_seal(const struct th_dlq *d, const char *entry_id, const char *plain, size_t len,
                   unsigned char **out, size_t *outlen);
/*
 * Opens a payload sealed under key_id. TH_E_NOTFOUND: no key with that id is configured;
 * TH_E_AUTH: the payload does not open (wrong key, tampered). *plain is malloc'ed and
 * NUL-terminated.
 */
th_err th_dlq_open(const struct th_dlq *d, const char *entry_id, const char *key_id,
                   const unsigned char *blob, size_t len, char **plain, size_t *plen);

/*
 * The payload's format belongs here, both ways: the hook seals what no attempt delivered, the
 * CLI opens it to show or replay (`dlq show`, `dlq replay`). The payload is the message as sent
 * (struct th_send, common/types.h) but its deadline.
 */
/*
 * Encodes m and seals it for entry_id into *blob (malloc'ed, as th_dlq_seal). The plaintext is
 * wiped before returning, sealed or not: it held the code.
 */
th_err th_dlq_payload_encode(const struct th_dlq *d, const char *entry_id, const struct th_send *m,
                             unsigned char **blob, size_t *len);

/* A payload opened: msg's strings point into doc (jansson's json_t, owned); a field the payload
 * lacks is NULL. msg.deadline_us is 0: the replay sets its own. */
struct json_t;
struct th_dlq_payload {
    struct th_send msg;
    struct json_t *doc; /* the whole payload as JSON, for `dlq show` */
};

/*
 * Opens (th_dlq_open's errors: TH_E_NOTFOUND, TH_E_AUTH) and decodes a sealed payload;
 * TH_E_INVAL when it is not a JSON object. The opened plaintext is wiped; release with
 * th_dlq_payload_release, which wipes the message text too.
 */
th_err th_dlq_payload_decode(const struct th_dlq *d, const char *entry_id, const char *key_id,
                             const unsigned char *blob, size_t len, struct th_dlq_payload *out);
void th_dlq_payload_release(struct th_dlq_payload *p); /* zeroed or released: a no-op */

/*
 * `telehook dlq keygen --kms`: KMS GenerateDataKey under [dlq] kms_key_id, the encrypted data key
 * (base64) written to path (mode 0600, never over an existing file). The data key itself is not
 * kept: KMS Decrypt gives it back at start. TH_E_CONFIG/TH_E_AUTH/TH_E_IO with the reason in err.
 */
th_err th_dlq_keygen_kms(const struct th_config *cfg, const char *path, char *err, size_t errlen);

/* The encrypted data key in path (a private file, strict base64) into blob. TH_E_CONFIG. */
th_err th_dlq_read_kms_blob(const char *path, char *blob, size_t bloblen, char *err, size_t errlen);

/* Writes a new random key, base64, for `telehook dlq keygen`. out: 45 bytes. */
th_err th_dlq_keygen(char out[45]);

#endif

/*
 * AWS KMS over its JSON 1.1 protocol (TrentService): the envelope key of the dead-letter queue.
 * GenerateDataKey makes a 256-bit data key and returns it twice — in the clear and sealed by the
 * KMS key (CiphertextBlob); only the blob is kept (a file), and Decrypt turns it back into the
 * data key at start. The data key lives in memory only.
 *
 * The pure half (bodies, answers) is separate from the blocking calls so the parsers can be
 * tested and fuzzed: a KMS answer is trust-boundary input, read strictly and bounded — a JSON
 * object under TH_KMS_MAX_ANSWER, the fields as strings, base64 strictly canonical (the standard
 * alphabet, padded, nothing else), the data key exactly 32 bytes.
 */
#ifndef TH_AWS_KMS_H
#define TH_AWS_KMS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"
#include "common/err.h"
#include "config/config.h"

#define TH_KMS_MAX_ANSWER (16 * 1024) /* a real answer is under 1 KiB */
#define TH_KMS_MAX_BLOB   6144        /* CiphertextBlob, base64 characters (KMS: 6144 bytes max) */
#define TH_KMS_KEY_LEN    32

/* {"KeyId": key_id, "KeySpec": "AES_256"} into b (reset first). */
th_err th_kms_generate_body(struct th_buf *b, const char *key_id);
/* {"CiphertextBlob": blob_b64, "KeyId": key_id} ("KeyId" left out when key_id is NULL or ""). */
th_err th_kms_decrypt_body(struct th_buf *b, const char *blob_b64, const char *key_id);

/*
 * A GenerateDataKey or Decrypt answer: "Plaintext" → key (exactly 32 bytes); with blob non-NULL
 * also "CiphertextBlob" (strict base64, at most TH_KMS_MAX_BLOB characters) → blob. TH_E_INVAL
 * with a reason in why (never quoting a value) otherwise; out written only on success.
 */
th_err th_kms_parse_answer(const char *json, size_t len, unsigned char key[TH_KMS_KEY_LEN],
                           char *blob, size_t bloblen, char *why, size_t whylen);

/* An error answer: "__type" (after its '#', if any) into type, "message"/"Message" into msg
   (printable ASCII, cut to fit). false when it is not one. */
bool th_kms_parse_error(const char *json, size_t len, char *type, size_t typelen, char *msg,
                        size_t msglen);

/* Strict base64 (standard alphabet, '=' padding, length a multiple of 4): the decoded length, or
   -1 when text is not canonical base64 or does not fit in cap. */
long th_kms_b64_decode(const char *text, size_t len, unsigned char *out, size_t cap);

/*
 * The calls, blocking (start-up and the CLI only): the endpoint is AWS_ENDPOINT_URL_KMS, else
 * AWS_ENDPOINT_URL, else https://kms.REGION.amazonaws.com/ (region: [aws] region, AWS_REGION,
 * the profile); credentials: the AWS chain of [aws] profile; CA bundle: [aws] ca_file, else
 * the SDKs' (th_aws_resolve_ca_bundle). TH_E_CONFIG or TH_E_AUTH with the reason in err (KMS's
 * error type, e.g. "AccessDeniedException: ...").
 */
th_err th_kms_generate_data_key(const struct th_config *cfg, const char *key_id,
                                unsigned char key[TH_KMS_KEY_LEN], char *blob, size_t bloblen,
                                char *err, size_t errlen);
th_err th_kms_decrypt(const struct th_config *cfg, const char *key_id, const char *blob_b64,
                      unsigned char key[TH_KMS_KEY_LEN], char *err, size_t errlen);

#endif

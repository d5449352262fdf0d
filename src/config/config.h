/*
 * Configuration: one table of keys (section, name, type, bounds, default, secret?, help),
 * read from an INI file (libinih), then overridden by environment variables
 * TELEHOOK_<SECTION>_<KEY> (upper case), then validated. A secret key "x" may instead be given
 * as "x_file" (file or TELEHOOK_<SECTION>_<KEY>_FILE): the file's content, with one trailing
 * newline stripped, becomes the value; a file other users can access is refused, one its group
 * can read is taken with a warning. Unknown keys, unknown sections, bad values: errors naming
 * the key and where it came from (file:line or the environment variable).
 */
#ifndef TH_CONFIG_CONFIG_H
#define TH_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "common/err.h"
#include "common/types.h"

typedef enum {
    TH_AUTH_HEADER, /* "header": Okta's HTTP-header secret */
    TH_AUTH_NONE,   /* "none": development only; refused unless server.listen is loopback */
    TH_AUTH_OAUTH2, /* "oauth2": a JWT access token from Okta's authorization server */
    TH_AUTH_EITHER  /* "either": a bearer token or the header secret (for migrating) */
} th_auth_mode;

/* The shortest auth.header_secret accepted (the whole value, "Basic " included), in bytes. */
#define TH_AUTH_HEADER_SECRET_MIN 16

struct th_config {
    /* [server] */
    char *listen;        /* "127.0.0.1:8080", "[::1]:8080", "0.0.0.0:8443"; port 0 = kernel picks */
    char *tls_cert;      /* PEM chain for HTTPS; "" = plain HTTP */
    char *tls_key;       /* its PEM key (a secret file: mode checked) */
    int threads;         /* event loops; 0 = number of online CPUs */
    int deadline_ms;     /* time budget per Okta request, 100..2900 */
    int max_body;        /* bytes, 1024..1048576 */
    int max_connections; /* per process */
    int connection_timeout; /* seconds of inactivity before a connection is closed */
    int connection_memory;  /* libmicrohttpd per-connection pool, bytes */
    char *port_file;        /* if set, the bound port is written there once listening */
    int max_headers;        /* request header fields; more: 431 */
    int max_header_bytes;   /* total size of the header fields; more: 431 */
    char *source_rate;      /* requests per client address, "N/PERIOD" or "0" */
    int max_connections_per_source;
    bool process_metrics; /* /metrics also shows process_* (read from /proc at each scrape) */
    /* [auth] */
    th_auth_mode auth_mode;
    char *auth_header_name;   /* default "Authorization" */
    char *auth_header_secret; /* secret; required when mode = header */
    char *auth_issuer;        /* "https://example.okta.com/oauth2/default" */
    char *auth_audience;      /* "api://default" */
    char *auth_scopes;        /* required scopes, space or comma separated */
    char *auth_client_ids;    /* allowed cid values; "" = any */
    char *auth_jwks_url;      /* "" = discovery, else {issuer}/v1/keys */
    char *auth_jwks_file;     /* a local JWKS instead of fetching */
    char *auth_algorithms;    /* "RS256", "RS256 ES256" */
    int auth_clock_skew;      /* seconds */
    /* [phone] */
    char *phone_default_region; /* ISO alpha-2, e.g. "US"; "" = none */
    /* [message] */
    char *message_default_language; /* normalised, e.g. "en" */
    bool message_builtin_fallback;  /* end the locale chain with the built-in English text */
    bool message_builtin_pack;      /* the built-in language pack is part of the locale chain */
    int message_sms_encoding;       /* th_sms_encoding: 0 auto, 1 gsm7, 2 ucs2 */
    int message_max_sms_segments;   /* templates over this many segments refused; 0 = no limit */
    char *message_sms_prices;       /* "CC:USD, ..." per segment, for templates preview */
    /* [store] */
    char *store_url;       /* "sqlite:PATH" or a bare path */
    char *store_spool;     /* PostgreSQL out of reach: rows kept in this local file ("" = none) */
    int store_spool_max;   /* rows the spool holds at most */
    int store_unavailable; /* 0 open, 1 closed: the guard when the shared state does not answer */
    /* [provider] */
    char *provider_name; /* the default route's provider: outbox | aws | twilio | webhook */
    /* [dispatch] */
    int dispatch_max_in_flight;    /* provider transfers at once, per process */
    int dispatch_breaker_failures; /* consecutive failures that open a provider's circuit; 0 off */
    int dispatch_breaker_seconds;  /* how long an open circuit skips the provider */
    /* [routing] route health from delivery receipts (route/router.h) */
    int routing_health_threshold; /* delivered percent under which a provider is demoted; 0 off */
    int routing_health_min_receipts; /* final receipts in the window before a judgement */
    int routing_health_window;       /* seconds */
    /* [feedback] verified messages reported to the providers (route/feedback.h) */
    bool feedback_enabled;
    bool feedback_aws;      /* with enabled: PutMessageFeedback, and sends ask for feedback */
    bool feedback_twilio;   /* with enabled: Feedback.json, and SMS sends set ProvideFeedback */
    int feedback_max_queue; /* verified messages waiting at most */
    /* [tls] outbound: what every HTTPS connection telehook makes trusts (net/trust.h) */
    char *tls_ca_file; /* PEM bundle replacing the system store; "" = the system store */
    char *tls_ca_path; /* directory of hashed CA certificates, idem */
    /* [aws] End User Messaging SMS and Voice v2 */
    char *aws_region;   /* "" = AWS_REGION, AWS_DEFAULT_REGION, then the config file */
    char *aws_endpoint; /* "" = AWS_ENDPOINT_URL_PINPOINT_SMS_VOICE_V2 / AWS_ENDPOINT_URL */
    char *aws_profile;  /* "" = AWS_PROFILE, then "default" */
    char *aws_origination_identity; /* default sender: number, id, ARN, pool, sender id */
    char *aws_configuration_set;
    char *aws_max_price;            /* SMS, USD per message, e.g. "0.05"; "" = none */
    char *aws_max_price_per_minute; /* voice */
    int aws_timeout_ms;
    char *aws_ca_file; /* "" = AWS_CA_BUNDLE, the profile's ca_bundle, then [tls] */
    /* [twilio] */
    char *twilio_account_sid;
    char *twilio_auth_token; /* secret */
    char *twilio_api_key_sid;
    char *twilio_api_key_secret; /* secret */
    char *twilio_from;
    char *twilio_messaging_service_sid;
    char *twilio_base_url;
    int twilio_timeout_ms;
    char *twilio_ca_file; /* "" = [tls] */
    /* [receipts] (docs/conversion-receipts.md) */
    char *receipts_twilio_status_url; /* "" = off */
    char *receipts_sns_topic_arns;    /* "" = off */
    char *receipts_sns_cert_hosts;
    char *receipts_eventbridge_header;
    char *receipts_eventbridge_secret; /* secret; "" = off */
    int receipts_max_queue;
    /* [webhook] */
    char *webhook_url;
    char *webhook_secret; /* secret */
    int webhook_timeout_ms;
    char *webhook_ca_file; /* "" = [tls] */
    /* [guard] abuse controls */
    char *guard_secret; /* HMAC key for dedupe/limit keys; "" = random per start */
    char *guard_url;    /* PostgreSQL of the shared guard state; "" = store.url's if PostgreSQL */
    bool guard_dedupe;
    char *guard_limit_phone; /* "N/PERIOD" or "0" */
    char *guard_limit_phone_daily;
    char *guard_limit_user;
    char *guard_limit_country;
    char *guard_budget_calling_code; /* "N/1d" default daily budget per calling code */
    char *guard_budgets;             /* "44:20000, 1:100000" */
    char *guard_limit_global;
    char *guard_countries_allow;
    char *guard_countries_deny;
    /* by calling code: "+1 +44" ("" = no allow-list); "+881" or "non-geographic" (default) */
    char *guard_calling_codes_allow;
    char *guard_calling_codes_deny;
    char *guard_sms_refuse;   /* number types refused for SMS */
    char *guard_voice_refuse; /* for voice */
    int guard_block_answer;   /* 0 failed, 1 error */
    int guard_max_entries;
    /* [conversion] pumping stopped by conversion (guard/conv.h) */
    int conversion_mode; /* 0 off, 1 monitor, 2 enforce */
    bool conversion_require_signal;
    int conversion_window_minutes;
    int conversion_prefix_min_sends;
    int conversion_prefix_min_rate; /* percent */
    int conversion_country_min_sends;
    int conversion_country_min_rate;
    int conversion_block_minutes;
    int conversion_max_prefixes;
    int conversion_max_verified;
    /* [dlq] */
    bool dlq_enabled;
    char *dlq_key; /* secret: 32 bytes, base64 or hex */
    char *dlq_key_id;
    char *dlq_previous_key; /* secret: still opens entries sealed before a rotation */
    char *dlq_previous_key_id;
    char *dlq_kms_key_id;                 /* "" = no KMS: [dlq] key seals */
    char *dlq_kms_data_key_file;          /* the data key sealed by KMS (base64 blob) */
    char *dlq_previous_kms_data_key_file; /* the data key before a rotation */
    int dlq_retention_days;
    int dlq_depth_refresh; /* seconds: the DLQ depth gauge's refresh */
    int store_deliveries_retention_days;
    int store_outbox_retention_days;
    /* [events]: Okta's event hook, conversion tracking (docs/conversion.md) */
    bool events_enabled;        /* POST/GET /v1/okta/events served (else 404) */
    char *events_header_name;   /* the event hook's authentication field */
    char *events_header_secret; /* its secret; "" = the telephony hook's authentication */
    int events_window;          /* seconds before an event a delivery may be credited */
    int events_skew;            /* seconds after it (clocks apart) */
    int events_max_body;        /* bytes of one delivery */
    /* [log] */
    th_log_level log_level;
    bool log_emf;         /* CloudWatch Embedded Metric Format lines on the log stream */
    int log_emf_interval; /* seconds between two */
    char *log_emf_namespace;
    /* not a key: what loading found worth a warning but not a refusal (a secret file its group
     * can read), one line each ("" or NULL: none); the caller logs it */
    char *warnings;
};

/*
 * Fills cfg with defaults, then the file (path may be NULL: defaults + environment only), then
 * the environment (envp as in main's third argument / environ; NULL means the process
 * environment), then validates each value. Environment variables TELEHOOK_<SECTION>_* that name
 * no key of a known section are errors (a typo must not silently fall back to a default);
 * variables whose <SECTION> is not a known section are ignored. On failure returns TH_E_CONFIG with
 * one clear message in err, e.g. "telehook.conf:12: [server] deadline_ms: must be between 100 and
 * 2900 (got 5000)" or "TELEHOOK_SERVER_THREADS: not an integer: 'x'". cfg is released on failure.
 */
th_err th_config_load(struct th_config *cfg, const char *path, char *const *envp, char *err,
                      size_t errlen);

/*
 * What only the server needs, checked by `serve` and `config check` but not by the admin
 * commands (which need the store, not the credentials): mode=header has a secret of at least
 * TH_AUTH_HEADER_SECRET_MIN bytes; mode=none listens on loopback only; every CA file and
 * directory set can be read (PEM); the webhook URL is https, or http to loopback. TH_E_CONFIG
 * with the reason in err.
 */
th_err th_config_check_serve(const struct th_config *cfg, char *err, size_t errlen);

/* Frees every string; cfg may be zeroed or loaded. */
void th_config_release(struct th_config *cfg);

/*
 * Prints the effective configuration as INI ("[section]" then "key = value"), every key of the
 * table, secrets shown as "********" when set and "" when not.
 */
void th_config_print(const struct th_config *cfg, FILE *out);

/* Iterates the key table (for docs and the example-config test): section, key, default, help. */
typedef void (*th_config_key_fn)(void *ud, const char *section, const char *key,
                                 const char *default_value, bool secret, const char *help);
void th_config_each_key(th_config_key_fn fn, void *ud);

/*
 * The effective values in table order, as th_config_print shows them (secrets "********" when
 * set, "" when not), each with its kind: 'i' integer, 'b' boolean ("true" / "false"), 's' text.
 * For `config show --json`.
 */
typedef void (*th_config_value_fn)(void *ud, const char *section, const char *key, char kind,
                                   const char *value);
void th_config_each_value(const struct th_config *cfg, th_config_value_fn fn, void *ud);

/*
 * Every key whose value differs between a and b, in table order (secrets compared, never
 * shown): for a reload to say what it applied and what waits for a restart.
 */
typedef void (*th_config_change_fn)(void *ud, const char *section, const char *key);
void th_config_each_change(const struct th_config *a, const struct th_config *b,
                           th_config_change_fn fn, void *ud);

#endif

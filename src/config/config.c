#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>

#include "common/util.h"
#include "common/trust_check.h"
#include "common/rate.h"

extern char **environ;

#define SECRET_MAX   4096
#define LINE_MAX_LEN 199 /* libinih's INI_MAX_LINE (200) less the newline */

enum ktype {
    K_STRING,
    K_SECRET,
    K_INT,
    K_BOOL,
    K_ENUM,     /* int field holding the index in names */
    K_NAME,     /* string field that must be one of names */
    K_LISTEN,   /* HOST:PORT */
    K_HEADER,   /* an HTTP header name */
    K_REGION,   /* ISO alpha-2, upper case, or "" */
    K_LANGUAGE, /* normalised tag: "en", "es-mx" */
    K_LIMIT     /* "N/PERIOD" or "0" */
};

struct key {
    const char *section, *name;
    enum ktype type;
    size_t off;
    long min, max;
    const char *const *names;
    const char *def;
    const char *help;
};

static const char *const auth_modes[] = {"header", "none", "oauth2", "either", NULL};
static const char *const block_answers[] = {"failed", "error", NULL};
static const char *const unavailable_modes[] = {"open", "closed", NULL};
static const char *const conversion_modes[] = {"off", "monitor", "enforce", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const providers[] = {"outbox", "aws", "twilio", "webhook", NULL};
static const char *const sms_encodings[] = {"auto", "gsm7", "ucs2", NULL};

#define F(field) offsetof(struct th_config, field)

/* Every key, once: name, type, bounds, default, and the help printed in docs. */
static const struct key keys[] = {
    {"server", "listen", K_LISTEN, F(listen), 0, 0, NULL, "127.0.0.1:8080",
     "address and port to listen on: 127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080; port 0 lets the "
     "kernel pick"},
    {"server", "tls_cert", K_STRING, F(tls_cert), 0, 0, NULL, "",
     "PEM certificate chain (leaf first) to serve HTTPS with; empty: plain HTTP (a TLS "
     "terminator in front); re-read on SIGHUP"},
    {"server", "tls_key", K_STRING, F(tls_key), 0, 0, NULL, "",
     "PEM private key of tls_cert (unencrypted; refused when other users can read it); re-read "
     "on SIGHUP"},
    {"server", "threads", K_INT, F(threads), 0, 64, NULL, "0",
     "event loops (one per core is best); 0 = the number of online CPUs"},
    {"server", "deadline_ms", K_INT, F(deadline_ms), 100, 2900, NULL, "2500",
     "time budget for one Okta request, from arrival to answer (Okta gives up after 3 s)"},
    {"server", "max_body", K_INT, F(max_body), 1024, 1048576, NULL, "65536",
     "largest request body accepted, in bytes (larger: 413)"},
    {"server", "max_connections", K_INT, F(max_connections), 1, 100000, NULL, "1024",
     "open client connections, across all threads"},
    {"server", "connection_timeout", K_INT, F(connection_timeout), 1, 3600, NULL, "10",
     "seconds a client connection may stay idle"},
    {"server", "connection_memory", K_INT, F(connection_memory), 4096, 1048576, NULL, "16384",
     "bytes of buffer per connection (request line and headers must fit)"},
    {"server", "max_headers", K_INT, F(max_headers), 4, 1000, NULL, "64",
     "request header fields accepted (more: 431, before authentication)"},
    {"server", "max_header_bytes", K_INT, F(max_header_bytes), 1024, 1048576, NULL, "8192",
     "bytes of request header fields accepted (more: 431); keep it under connection_memory"},
    {"server", "source_rate", K_LIMIT, F(source_rate), 0, 0, NULL, "0",
     "requests per client address (N/PERIOD, e.g. 200/1s; more: 429 before authentication); 0 "
     "= off. Okta calls from few addresses: size it for Okta's peak, or leave it off behind a "
     "proxy"},
    {"server", "max_connections_per_source", K_INT, F(max_connections_per_source), 0, 100000, NULL,
     "0", "open connections per client address (0 = no cap beyond max_connections)"},
    {"server", "port_file", K_STRING, F(port_file), 0, 0, NULL, "",
     "if set, the bound port is written to this file once listening (for tests and scripts)"},
    {"server", "process_metrics", K_BOOL, F(process_metrics), 0, 0, NULL, "true",
     "also show the standard process_* metrics (CPU, memory, descriptors, start time) on "
     "/metrics; off keeps every name under telehook_"},
    {"auth", "mode", K_ENUM, F(auth_mode), 0, 0, auth_modes, "header",
     "header: Okta's HTTP-header secret; oauth2: a JWT access token from Okta's authorization "
     "server (recommended); either: both accepted (for migrating); none: no authentication "
     "(development only, loopback only)"},
    {"auth", "header_name", K_HEADER, F(auth_header_name), 0, 0, NULL, "Authorization",
     "the header Okta sends (the hook's \"Authentication field\")"},
    {"auth", "header_secret", K_SECRET, F(auth_header_secret), 0, 0, NULL, "",
     "the header's value (the hook's \"Authentication secret\"), compared verbatim, at least 16 "
     "bytes; prefer header_secret_file or TELEHOOK_AUTH_HEADER_SECRET(_FILE)"},
    {"auth", "issuer", K_STRING, F(auth_issuer), 0, 0, NULL, "",
     "oauth2: the authorization server that issues Okta's tokens, e.g. "
     "https://example.okta.com/oauth2/default (https; plain http only to loopback)"},
    {"auth", "audience", K_STRING, F(auth_audience), 0, 0, NULL, "api://default",
     "oauth2: the aud the token must carry"},
    {"auth", "scopes", K_STRING, F(auth_scopes), 0, 0, NULL, "okta.telephony.hook",
     "oauth2: scopes every token must hold in scp (space or comma separated; empty: none)"},
    {"auth", "client_ids", K_STRING, F(auth_client_ids), 0, 0, NULL, "",
     "oauth2: allowed cid values (the Okta app integration's client id); empty: any"},
    {"auth", "jwks_url", K_STRING, F(auth_jwks_url), 0, 0, NULL, "",
     "oauth2: where the issuer's keys are (https; plain http only to loopback); empty: "
     "jwks_uri from the issuer's discovery document, else ISSUER/v1/keys"},
    {"auth", "jwks_file", K_STRING, F(auth_jwks_file), 0, 0, NULL, "",
     "oauth2: a local JWKS file instead of fetching (see `telehook token keygen`)"},
    {"auth", "algorithms", K_STRING, F(auth_algorithms), 0, 0, NULL, "RS256",
     "oauth2: signature algorithms accepted: RS256, ES256 (none and HS* never are)"},
    {"auth", "clock_skew", K_INT, F(auth_clock_skew), 0, 300, NULL, "30",
     "oauth2: seconds of clock difference tolerated for exp, nbf and iat"},
    {"phone", "default_region", K_REGION, F(phone_default_region), 0, 0, NULL, "US",
     "region (ISO 3166 alpha-2) of numbers Okta sends without '+': read as national numbers "
     "of this region when valid there, else as international; empty: international only"},
    {"message", "default_language", K_LANGUAGE, F(message_default_language), 0, 0, NULL, "en",
     "template language used when none matches the request's locale"},
    {"message", "builtin_fallback", K_BOOL, F(message_builtin_fallback), 0, 0, NULL, "true",
     "when no template and no Okta text fits, send the built-in English text (false: answer "
     "Okta's error object, so Okta uses its own providers)"},
    {"message", "builtin_pack", K_BOOL, F(message_builtin_pack), 0, 0, NULL, "true",
     "use the built-in language pack (SMS and voice texts for Okta's end-user languages) where "
     "no stored template matches (false: stored templates, then Okta's text, then English)"},
    {"message", "sms_encoding", K_ENUM, F(message_sms_encoding), 0, 0, sms_encodings, "auto",
     "auto: as written, typographic punctuation made GSM-7 when that alone makes the text "
     "GSM-7; gsm7: also strip diacritics GSM-7 lacks from Latin letters when that makes it "
     "GSM-7 (other scripts stay UCS-2); ucs2: exactly as written"},
    {"message", "max_sms_segments", K_INT, F(message_max_sms_segments), 0, 10, NULL, "0",
     "SMS templates longer than this many segments (with an 8-digit code) are refused when set "
     "and skipped when loaded; 0 = no limit (over one segment is a warning)"},
    {"message", "sms_prices", K_STRING, F(message_sms_prices), 0, 0, NULL, "",
     "USD per SMS segment by country for `templates preview`, e.g. US:0.0088, DE:0.09 (over "
     "the built-in indicative table)"},
    {"store", "url", K_STRING, F(store_url), 0, 0, NULL, "sqlite:var/telehook.db",
     "where state is kept: sqlite:PATH (relative to the working directory), or PostgreSQL "
     "shared by several nodes: postgresql://USER@HOST/DB?sslmode=verify-full or "
     "postgresql:host=... dbname=... (libpq; PG* variables and ~/.pgpass apply; "
     "docs/multi-node.md)"},
    {"store", "spool", K_STRING, F(store_spool), 0, 0, NULL, "var/telehook.spool",
     "PostgreSQL only: where a node keeps the DLQ entries and delivery records the database "
     "could not take while out of reach (a local SQLite file, 0600; flushed when it returns); "
     "\"\" = none (they are lost)"},
    {"store", "spool_max", K_INT, F(store_spool_max), 1, 100000000, NULL, "100000",
     "rows the spool holds at most; beyond it delivery records are dropped first, DLQ entries "
     "only when nothing else is left (each logged and counted)"},
    {"store", "unavailable", K_ENUM, F(store_unavailable), 0, 0, unavailable_modes, "open",
     "when the shared PostgreSQL state does not answer within the request's budget: open (this "
     "node's in-memory dedupe and limits decide; logged and counted) or closed (Okta's error "
     "object: Okta uses its own providers)"},
    {"store", "deliveries_retention_days", K_INT, F(store_deliveries_retention_days), 0, 3650, NULL,
     "90", "delivery records older than this are deleted (hourly); 0 = kept"},
    {"store", "outbox_retention_days", K_INT, F(store_outbox_retention_days), 0, 3650, NULL, "7",
     "outbox messages older than this are deleted (hourly); 0 = kept"},
    {"provider", "name", K_NAME, F(provider_name), 0, 0, providers, "outbox",
     "the provider of the default route, used when no stored route matches: outbox (records "
     "messages in the store instead of sending; development), aws, twilio or webhook"},
    {"dispatch", "max_in_flight", K_INT, F(dispatch_max_in_flight), 1, 1000000, NULL, "4096",
     "provider requests in flight at once, across all threads; beyond it Okta gets an error "
     "at once (and uses its own providers)"},
    {"dispatch", "breaker_failures", K_INT, F(dispatch_breaker_failures), 0, 1000, NULL, "5",
     "consecutive failed attempts (timeouts, connection errors, 5xx, throttling) after which a "
     "provider is skipped; 0 disables the circuit breaker"},
    {"dispatch", "breaker_seconds", K_INT, F(dispatch_breaker_seconds), 1, 3600, NULL, "30",
     "how long a provider whose circuit opened is skipped before it is tried again"},
    {"routing", "health_threshold", K_INT, F(routing_health_threshold), 0, 100, NULL, "50",
     "route health: a provider whose final delivery receipts for a country show a delivered "
     "share (percent) below this is moved behind the next provider of the route; 0 = off"},
    {"routing", "health_min_receipts", K_INT, F(routing_health_min_receipts), 1, 1000000, NULL,
     "20", "final receipts in the window a (provider, country) needs before it is judged"},
    {"routing", "health_window", K_INT, F(routing_health_window), 60, 86400, NULL, "3600",
     "seconds of receipts the delivered share is computed over (8 buckets); a demoted provider "
     "with fewer than health_min_receipts receipts for a whole window comes back"},
    {"feedback", "enabled", K_BOOL, F(feedback_enabled), 0, 0, NULL, "false",
     "tell the providers which messages were verified (AWS PutMessageFeedback, Twilio Message "
     "Feedback); sends then ask for feedback (MessageFeedbackEnabled, ProvideFeedback)"},
    {"feedback", "aws", K_BOOL, F(feedback_aws), 0, 0, NULL, "true",
     "when enabled: AWS End User Messaging feedback (RECEIVED) for verified messages"},
    {"feedback", "twilio", K_BOOL, F(feedback_twilio), 0, 0, NULL, "true",
     "when enabled: Twilio Message Feedback (Outcome=confirmed) for verified SMS"},
    {"feedback", "max_queue", K_INT, F(feedback_max_queue), 1, 1000000, NULL, "4096",
     "verified messages waiting for their feedback call at most; beyond it they are dropped "
     "(counted in telehook_feedback_total{result=\"dropped\"})"},
    {"tls", "ca_file", K_STRING, F(tls_ca_file), 0, 0, NULL, "",
     "outbound: PEM file of the CA certificates trusted for every HTTPS connection telehook makes "
     "(providers, the issuer's keys, credential endpoints, an https proxy), replacing the system "
     "store; empty: the system store"},
    {"tls", "ca_path", K_STRING, F(tls_ca_path), 0, 0, NULL, "",
     "outbound: directory of CA certificates in OpenSSL's hashed layout (openssl rehash), "
     "replacing the system store like ca_file (with it: both)"},
    {"aws", "region", K_STRING, F(aws_region), 0, 0, NULL, "",
     "AWS region of End User Messaging; empty: AWS_REGION, AWS_DEFAULT_REGION, then the "
     "profile's region in the AWS config file"},
    {"aws", "endpoint", K_STRING, F(aws_endpoint), 0, 0, NULL, "",
     "endpoint URL override; empty: AWS_ENDPOINT_URL_PINPOINT_SMS_VOICE_V2, AWS_ENDPOINT_URL, "
     "else https://sms-voice.REGION.amazonaws.com"},
    {"aws", "profile", K_STRING, F(aws_profile), 0, 0, NULL, "",
     "profile of the shared credentials and config files (keys, roles, web identity, "
     "credential_process); empty: AWS_PROFILE, else default; a named profile must exist"},
    {"aws", "origination_identity", K_STRING, F(aws_origination_identity), 0, 0, NULL, "",
     "sender when a route names none: phone number, phone number id or ARN, pool id or ARN, "
     "sender id or ARN"},
    {"aws", "configuration_set", K_STRING, F(aws_configuration_set), 0, 0, NULL, "",
     "ConfigurationSetName sent with each message (delivery events go to its destinations)"},
    {"aws", "max_price", K_STRING, F(aws_max_price), 0, 0, NULL, "",
     "MaxPrice in USD per SMS (e.g. 0.05): dearer messages are refused by AWS; empty: none"},
    {"aws", "max_price_per_minute", K_STRING, F(aws_max_price_per_minute), 0, 0, NULL, "",
     "MaxPricePerMinute in USD for voice calls; empty: none"},
    {"aws", "timeout_ms", K_INT, F(aws_timeout_ms), 50, 10000, NULL, "2000",
     "time allowed for one attempt (never more than what is left of the request's deadline)"},
    {"aws", "ca_file", K_STRING, F(aws_ca_file), 0, 0, NULL, "",
     "PEM CA bundle for End User Messaging requests, replacing [tls]; empty: AWS_CA_BUNDLE, the "
     "profile's ca_bundle in the AWS config file, else [tls]"},
    {"twilio", "account_sid", K_STRING, F(twilio_account_sid), 0, 0, NULL, "",
     "Account SID (AC...), part of every API URL"},
    {"twilio", "auth_token", K_SECRET, F(twilio_auth_token), 0, 0, NULL, "",
     "Auth Token, used when no API key is set (prefer an API key)"},
    {"twilio", "api_key_sid", K_STRING, F(twilio_api_key_sid), 0, 0, NULL, "",
     "API key SID (SK...): Basic auth user"},
    {"twilio", "api_key_secret", K_SECRET, F(twilio_api_key_secret), 0, 0, NULL, "",
     "API key secret: Basic auth password"},
    {"twilio", "from", K_STRING, F(twilio_from), 0, 0, NULL, "",
     "sender when a route names none: a Twilio number (SMS and voice) or alphanumeric id"},
    {"twilio", "messaging_service_sid", K_STRING, F(twilio_messaging_service_sid), 0, 0, NULL, "",
     "Messaging Service (MG...) used for SMS when set and no sender is given"},
    {"twilio", "base_url", K_STRING, F(twilio_base_url), 0, 0, NULL, "https://api.twilio.com",
     "API base URL (change only for tests or a regional edge)"},
    {"twilio", "timeout_ms", K_INT, F(twilio_timeout_ms), 50, 10000, NULL, "2000",
     "time allowed for one attempt (never more than what is left of the request's deadline)"},
    {"twilio", "ca_file", K_STRING, F(twilio_ca_file), 0, 0, NULL, "",
     "PEM CA bundle for Twilio's API, replacing [tls]; empty: [tls]"},
    {"webhook", "url", K_STRING, F(webhook_url), 0, 0, NULL, "",
     "your gateway's URL: each message is POSTed there as JSON; https, or http only to a "
     "loopback host (the body holds the code)"},
    {"webhook", "secret", K_SECRET, F(webhook_secret), 0, 0, NULL, "",
     "HMAC-SHA256 key signing each POST (header X-Telehook-Signature: t=UNIX,v1=HEX)"},
    {"webhook", "timeout_ms", K_INT, F(webhook_timeout_ms), 50, 10000, NULL, "2000",
     "time allowed for one attempt (never more than what is left of the request's deadline)"},
    {"webhook", "ca_file", K_STRING, F(webhook_ca_file), 0, 0, NULL, "",
     "PEM CA bundle for your gateway (a private CA, say), replacing [tls]; empty: [tls]"},
    {"receipts", "twilio_status_url", K_STRING, F(receipts_twilio_status_url), 0, 0, NULL, "",
     "the public URL of POST /v1/twilio/status as Twilio calls it (behind a proxy: the proxy's); "
     "set, Twilio sends with StatusCallback=it and its callbacks are verified against it with "
     "[twilio] auth_token; empty: off"},
    {"receipts", "sns_topic_arns", K_STRING, F(receipts_sns_topic_arns), 0, 0, NULL, "",
     "comma-separated SNS topic ARNs whose notifications POST /v1/aws/sns accepts (End User "
     "Messaging delivery events); empty: the route is off"},
    {"receipts", "sns_cert_hosts", K_STRING, F(receipts_sns_cert_hosts), 0, 0, NULL,
     "sns.*.amazonaws.com",
     "hosts SigningCertURL and SubscribeURL may name (https only): comma-separated, '*' one label "
     "shaped as an AWS region name (us-east-1), ':PORT' when the URL carries a port"},
    {"receipts", "eventbridge_header", K_STRING, F(receipts_eventbridge_header), 0, 0, NULL,
     "X-Telehook-Receipts-Secret",
     "header carrying eventbridge_secret on POST /v1/aws/events (the API destination's "
     "connection, API key authorization)"},
    {"receipts", "eventbridge_secret", K_SECRET, F(receipts_eventbridge_secret), 0, 0, NULL, "",
     "the EventBridge connection's API key value; empty: POST /v1/aws/events is off"},
    {"receipts", "max_queue", K_INT, F(receipts_max_queue), 1, 1000000, NULL, "4096",
     "receipts waiting for the store at most; beyond it senders get 503 and retry"},
    {"guard", "secret", K_SECRET, F(guard_secret), 0, 0, NULL, "",
     "key of the HMACs under which numbers, users, event ids and codes are remembered; empty: "
     "a random key per start (set one when several nodes share state)"},
    {"guard", "url", K_STRING, F(guard_url), 0, 0, NULL, "",
     "PostgreSQL (postgresql://... or a conninfo string) holding the dedupe, limit and budget "
     "state shared by several nodes; empty: store.url when it is PostgreSQL and secret is "
     "set, else in memory"},
    {"guard", "dedupe", K_BOOL, F(guard_dedupe), 0, 0, NULL, "true",
     "answer a repeated eventId, or the same code to the same number and channel, with the "
     "first outcome instead of sending again (within the code's validity)"},
    {"guard", "limit_phone", K_LIMIT, F(guard_limit_phone), 0, 0, NULL, "5/15m",
     "sends per phone number, short window (N/PERIOD, PERIOD like 30s, 15m, 1h, 1d; 0 = off)"},
    {"guard", "limit_phone_daily", K_LIMIT, F(guard_limit_phone_daily), 0, 0, NULL, "20/1d",
     "sends per phone number, long window"},
    {"guard", "limit_user", K_LIMIT, F(guard_limit_user), 0, 0, NULL, "20/1h",
     "sends per Okta user id"},
    {"guard", "limit_country", K_LIMIT, F(guard_limit_country), 0, 0, NULL, "2000/1h",
     "sends per destination country"},
    {"guard", "budget_calling_code", K_LIMIT, F(guard_budget_calling_code), 0, 0, NULL, "1000/1d",
     "daily budget of sends per calling code (+44, +1, ...), counted per UTC day; budgets "
     "overrides it per code"},
    {"guard", "budgets", K_STRING, F(guard_budgets), 0, 0, NULL, "",
     "daily budgets per calling code overriding budget_calling_code, e.g. 1:50000, 44:20000, "
     "235:0 (0 = no sends)"},
    {"guard", "limit_global", K_LIMIT, F(guard_limit_global), 0, 0, NULL, "6000/1m",
     "sends across everything"},
    {"guard", "countries_allow", K_STRING, F(guard_countries_allow), 0, 0, NULL, "",
     "if set, only these destination countries (ISO codes, e.g. US CA GB)"},
    {"guard", "countries_deny", K_STRING, F(guard_countries_deny), 0, 0, NULL, "",
     "destination countries never sent to"},
    {"guard", "calling_codes_allow", K_STRING, F(guard_calling_codes_allow), 0, 0, NULL, "",
     "if set, only these calling codes (e.g. +1 +44), besides the countries of countries_allow; "
     "a code named here overrides non-geographic in calling_codes_deny"},
    {"guard", "calling_codes_deny", K_STRING, F(guard_calling_codes_deny), 0, 0, NULL,
     "non-geographic",
     "calling codes never sent to (e.g. +881 +882); non-geographic stands for every code of no "
     "country: +800 +808 +870 +878 +881 +882 +883 +888 +979; empty: none"},
    {"guard", "sms_refuse", K_STRING, F(guard_sms_refuse), 0, 0, NULL,
     "FIXED_LINE PREMIUM_RATE SHARED_COST TOLL_FREE UNKNOWN",
     "number types refused for SMS (libphonenumber's: FIXED_LINE, MOBILE, "
     "FIXED_LINE_OR_MOBILE, TOLL_FREE, PREMIUM_RATE, SHARED_COST, VOIP, UAN, ...)"},
    {"guard", "voice_refuse", K_STRING, F(guard_voice_refuse), 0, 0, NULL,
     "PREMIUM_RATE SHARED_COST", "number types refused for voice calls"},
    {"guard", "block_answer", K_ENUM, F(guard_block_answer), 0, 0, block_answers, "failed",
     "what a blocked request gets: failed (Okta's FAILED status: nothing is sent) or error "
     "(Okta's error object: Okta sends the code through its own providers)"},
    {"guard", "max_entries", K_INT, F(guard_max_entries), 1000, 10000000, NULL, "100000",
     "numbers and users remembered at once per table (bounded memory under a flood)"},
    {"conversion", "mode", K_ENUM, F(conversion_mode), 0, 0, conversion_modes, "monitor",
     "pumping stopped by conversion: off, monitor (blocks are made, logged, listed and counted "
     "as would_refuse; nothing is refused) or enforce (refused as guard.block_answer says, once "
     "a verification has been seen within the window: a missing Okta event hook blocks nobody); "
     "needs guard.secret (the prefix keys)"},
    {"conversion", "require_signal", K_BOOL, F(conversion_require_signal), 0, 0, NULL, "true",
     "enforce refuses only while a verification has been seen within the window (the Okta "
     "event hook delivers); false: from the first block (an install that accepts blocking "
     "while conversion is not reported)"},
    {"conversion", "window_minutes", K_INT, F(conversion_window_minutes), 5, 1440, NULL, "60",
     "sliding window of sends and verifications (12 buckets)"},
    {"conversion", "prefix_min_sends", K_INT, F(conversion_prefix_min_sends), 0, 100000, NULL, "20",
     "sends to one prefix (the number less its last 4 digits) in the window before its "
     "conversion is judged; 0 = no prefix rule"},
    {"conversion", "prefix_min_rate", K_INT, F(conversion_prefix_min_rate), 0, 100, NULL, "10",
     "percent of those sends verified below which the prefix is blocked"},
    {"conversion", "country_min_sends", K_INT, F(conversion_country_min_sends), 0, 10000000, NULL,
     "200",
     "sends to one country (to prefixes not blocked) before its conversion is judged; 0 = no "
     "country rule"},
    {"conversion", "country_min_rate", K_INT, F(conversion_country_min_rate), 0, 100, NULL, "10",
     "percent verified below which the country is blocked"},
    {"conversion", "block_minutes", K_INT, F(conversion_block_minutes), 1, 10080, NULL, "60",
     "how long a block lasts (`telehook guard blocks clear` lifts it sooner)"},
    {"conversion", "max_prefixes", K_INT, F(conversion_max_prefixes), 16, 10000000, NULL, "16384",
     "prefixes tracked at once (about 240 bytes each; the coldest goes for a new one)"},
    {"conversion", "max_verified", K_INT, F(conversion_max_verified), 16, 10000000, NULL, "65536",
     "numbers that verified remembered at once (never refused by a block; 32 bytes each, the "
     "oldest goes)"},
    {"dlq", "enabled", K_BOOL, F(dlq_enabled), 0, 0, NULL, "true",
     "keep every request no attempt delivered (all routes failed, deadline, internal error), "
     "with its error chain"},
    {"dlq", "key", K_SECRET, F(dlq_key), 0, 0, NULL, "",
     "AES-256-GCM key sealing the entries' payload (the message, which holds the code): 32 "
     "bytes in base64 or hex (`telehook dlq keygen`); without it, entries have no payload"},
    {"dlq", "key_id", K_STRING, F(dlq_key_id), 0, 0, NULL, "k1",
     "name stored with each entry sealed under key (change it when you rotate the key)"},
    {"dlq", "previous_key", K_SECRET, F(dlq_previous_key), 0, 0, NULL, "",
     "the key before a rotation: entries it sealed still open"},
    {"dlq", "previous_key_id", K_STRING, F(dlq_previous_key_id), 0, 0, NULL, "k0",
     "previous_key's name"},
    {"dlq", "kms_key_id", K_STRING, F(dlq_kms_key_id), 0, 0, NULL, "",
     "AWS KMS key (id, ARN or alias) sealing the data key that seals the entries (envelope "
     "encryption; instead of key): the data key is opened with KMS Decrypt at start"},
    {"dlq", "kms_data_key_file", K_STRING, F(dlq_kms_data_key_file), 0, 0, NULL, "",
     "where the data key sealed by kms_key_id is kept (base64; `telehook dlq keygen --kms` "
     "writes it, mode 0600); required with kms_key_id"},
    {"dlq", "previous_kms_data_key_file", K_STRING, F(dlq_previous_kms_data_key_file), 0, 0, NULL,
     "",
     "the KMS-sealed data key before a rotation (previous_key_id): entries it sealed "
     "still open"},
    {"dlq", "retention_days", K_INT, F(dlq_retention_days), 0, 3650, NULL, "7",
     "entries older than this are deleted (hourly); 0 = kept"},
    {"dlq", "depth_refresh", K_INT, F(dlq_depth_refresh), 1, 3600, NULL, "30",
     "seconds: how stale the telehook_dlq_depth gauge may get (the store writer counts the "
     "entries again at most this often, when /metrics asks; deletes by `telehook dlq` in "
     "another process show after it)"},
    {"events", "enabled", K_BOOL, F(events_enabled), 0, 0, NULL, "false",
     "serve Okta's event hook at /v1/okta/events (conversion tracking: which deliveries ended "
     "in a verified sign-in); off: the path answers 404"},
    {"events", "header_name", K_HEADER, F(events_header_name), 0, 0, NULL, "Authorization",
     "the header the event hook sends (its \"Authentication field\"), used with header_secret"},
    {"events", "header_secret", K_SECRET, F(events_header_secret), 0, 0, NULL, "",
     "the event hook's own secret (its \"Authentication secret\"), at least 16 bytes; empty: the "
     "telephony hook's authentication applies ([auth], header mode: one secret for both); "
     "required with auth.mode = oauth2 (event hooks send a header secret only)"},
    {"events", "window", K_INT, F(events_window), 60, 3600, NULL, "600",
     "seconds before an event in which the delivery it verifies was sent: Okta's codes live 5 "
     "minutes, and a user may finish a few minutes after the code arrived"},
    {"events", "skew", K_INT, F(events_skew), 0, 300, NULL, "60",
     "seconds after an event's time a delivery may still be credited (Okta's clock and ours "
     "apart)"},
    {"events", "max_body", K_INT, F(events_max_body), 1024, 4194304, NULL, "1048576",
     "largest event hook delivery accepted, in bytes (a batch of System Log events)"},
    {"log", "level", K_ENUM, F(log_level), 0, 0, log_levels, "info",
     "least severe level logged: debug, info, warn, error"},
    {"log", "emf", K_BOOL, F(log_emf), 0, 0, NULL, "false",
     "also write metrics as CloudWatch Embedded Metric Format lines (event \"metrics\") on the "
     "log stream, whatever log.level says: CloudWatch Logs turns them into metrics"},
    {"log", "emf_interval", K_INT, F(log_emf_interval), 1, 3600, NULL, "60",
     "seconds between two metrics lines (each carries the counts of its interval); 60 matches "
     "CloudWatch's standard resolution, below 10 only for tests"},
    {"log", "emf_namespace", K_STRING, F(log_emf_namespace), 0, 0, NULL, "Telehook",
     "CloudWatch namespace of the metrics (1 to 255 characters)"},
};

#define NKEYS TH_ARRAY_LEN(keys)

static char **str_field(struct th_config *cfg, const struct key *k)
{
    return (char **)(void *)((char *)cfg + k->off);
}

static int *int_field(struct th_config *cfg, const struct key *k)
{
    return (int *)(void *)((char *)cfg + k->off);
}

/* ---- value parsing ---- */

static bool valid_listen(const char *v)
{
    char host[256];
    return th_hostport_parse(v, host, sizeof host, NULL) == TH_E_OK && host[0]; /* a host */
}

static bool valid_header(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n > 64)
        return false;
    for (const char *p = v; *p; p++) /* RFC 9110 token characters */
        if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p))
            return false;
    return true;
}

static bool valid_language(const char *v)
{
    size_t n = strlen(v);
    if (n < 2 || n > 15)
        return false;
    for (const char *p = v; *p; p++)
        if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '-')
            return false;
    return isalpha((unsigned char)v[0]) && v[n - 1] != '-' && !strstr(v, "--");
}

static th_err set_string(char **field, const char *v)
{
    char *c = strdup(v);
    if (!c)
        return TH_E_NOMEM;
    free(*field);
    *field = c;
    return TH_E_OK;
}

/*
 * A secret is one line of visible text: the value of an HTTP header (auth.header_secret,
 * Twilio's Basic auth), or a key the operator pastes. So it holds no control byte (a header
 * cannot carry one: a NUL or a second newline makes a secret nobody sends) and no space or tab
 * at either end (HTTP drops those around a header value). n is the value's length; why names the
 * fault, never a byte of the value.
 */
static const char *secret_text_fault(const char *v, size_t n)
{
    if (n > SECRET_MAX)
        return "longer than 4096 bytes";
    if (n && (v[n - 1] == '\n' || v[n - 1] == '\r'))
        return "ends in a newline (a file's one trailing newline is ignored, a second is not): "
               "a value nobody sends";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c == '\0')
            return "holds a NUL byte";
        if (c < 0x20 || c == 0x7f)
            return "holds a control character (newline, tab, ...): a secret is one line of text";
    }
    if (n && (v[0] == ' ' || v[n - 1] == ' '))
        return "starts or ends with a space (HTTP drops those around a header value)";
    return NULL;
}

/* Parses v into k's field; on error writes "[section] key: reason" into err. */
static th_err set_value(struct th_config *cfg, const struct key *k, const char *v, char *err,
                        size_t errlen)
{
    const char *why = NULL;
    char buf[160];
    switch (k->type) {
    case K_INT: {
        char *end;
        errno = 0;
        long n = strtol(v, &end, 10);
        if (!*v || *end || errno) {
            snprintf(buf, sizeof buf, "not an integer: '%.40s'", v);
            why = buf;
        } else if (n < k->min || n > k->max) {
            snprintf(buf, sizeof buf, "must be between %ld and %ld (got %ld)", k->min, k->max, n);
            why = buf;
        } else {
            *int_field(cfg, k) = (int)n;
        }
        break;
    }
    case K_BOOL:
        if (!strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on") ||
            !strcmp(v, "1"))
            *(bool *)(void *)((char *)cfg + k->off) = true;
        else if (!strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off") ||
                 !strcmp(v, "0"))
            *(bool *)(void *)((char *)cfg + k->off) = false;
        else {
            snprintf(buf, sizeof buf, "expected true or false, got '%.40s'", v);
            why = buf;
        }
        break;
    case K_ENUM:
    case K_NAME: {
        int idx = -1;
        for (int i = 0; k->names[i]; i++)
            if (strcmp(v, k->names[i]) == 0)
                idx = i;
        if (idx < 0) {
            int n = snprintf(buf, sizeof buf, "'%.40s' is not one of:", v);
            for (int i = 0; k->names[i] && n > 0 && (size_t)n < sizeof buf; i++)
                n += snprintf(buf + n, sizeof buf - (size_t)n, " %s", k->names[i]);
            why = buf;
        } else if (k->type == K_ENUM) {
            *int_field(cfg, k) = idx;
        } else if (set_string(str_field(cfg, k), v) != TH_E_OK) {
            why = "out of memory";
        }
        break;
    }
    case K_LISTEN:
        if (!valid_listen(v))
            why = "expected HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080";
        break;
    case K_HEADER:
        if (!valid_header(v))
            why = "not a valid HTTP header name (1-64 token characters)";
        break;
    case K_REGION:
        if (*v &&
            (strlen(v) != 2 || !isupper((unsigned char)v[0]) || !isupper((unsigned char)v[1])))
            why = "expected an ISO 3166 alpha-2 region in upper case, like US, or empty";
        break;
    case K_LANGUAGE:
        if (!valid_language(v))
            why = "expected a lower-case language tag like en or es-mx";
        break;
    case K_LIMIT: {
        long n, p;
        if (!th_rate_parse(v, &n, &p))
            why = "expected N/PERIOD like 5/15m, 20/1d or 100/30s, or 0 for off";
        break;
    }
    case K_SECRET: /* "" is "not set"; a file's value was checked (with a better message) */
        if ((why = secret_text_fault(v, strlen(v))) != NULL) {
            snprintf(buf, sizeof buf, "the value %s", why);
            why = buf;
        }
        break;
    case K_STRING:
        break;
    }
    if (!why &&
        (k->type == K_STRING || k->type == K_SECRET || k->type == K_LISTEN || k->type == K_HEADER ||
         k->type == K_REGION || k->type == K_LANGUAGE || k->type == K_LIMIT) &&
        set_string(str_field(cfg, k), v) != TH_E_OK)
        why = "out of memory";
    if (why) {
        snprintf(err, errlen, "[%s] %s: %s", k->section, k->name, why);
        return TH_E_CONFIG;
    }
    return TH_E_OK;
}

/*
 * Reads a secret file (every *_file key): it must be a regular file (a symlink to one is fine:
 * Kubernetes mounts secrets as symlinks; the checks are on what was opened), not readable,
 * writable or executable by others, as ssh demands of a private key. One its group can read
 * (root:telehook 0640 under systemd) is taken, with a warning in warn ("" when none). At most
 * SECRET_MAX bytes; exactly one trailing newline (LF or CRLF) is removed, as editors and `echo`
 * write one; what is left must be a secret_text_fault-free, non-empty value.
 */
static th_err read_secret_file(const char *path, char **out, char *warn, size_t warnlen, char *err,
                               size_t errlen)
{
    /* one byte more than the largest acceptable file (SECRET_MAX + CRLF) tells "too long" */
    char *buf;
    size_t n;
    th_err e = th_read_private_file(path, true, "secret", SECRET_MAX + 3, &buf, &n, warn, warnlen,
                                    err, errlen);
    if (e != TH_E_OK)
        return e;
    if (n && buf[n - 1] == '\n') {
        n--;
        if (n && buf[n - 1] == '\r')
            n--;
    }
    const char *fault = n == 0 ? "is empty" : secret_text_fault(buf, n);
    if (fault) {
        explicit_bzero(buf, SECRET_MAX + 3);
        free(buf);
        snprintf(err, errlen, "'%s' %s", path, fault);
        return TH_E_CONFIG;
    }
    buf[n] = '\0';
    *out = buf;
    return TH_E_OK;
}

/* ---- sources ---- */

struct loader {
    struct th_config *cfg;
    const char *path;
    FILE *f;
    int line;
    bool line_too_long;
    char *err;
    size_t errlen;
    th_err result;
    /* per key, for the level being loaded: set directly, set through *_file */
    bool direct[NKEYS], viafile[NKEYS];
};

static void fail(struct loader *ld, const char *where, const char *msg)
{
    if (ld->result != TH_E_OK)
        return; /* keep the first error: later ones are often consequences */
    ld->result = TH_E_CONFIG;
    snprintf(ld->err, ld->errlen, "%s: %s", where, msg);
}

/* Appends one line to cfg->warnings (kept when memory runs out: a warning is not an error). */
static void add_warning(struct loader *ld, const char *msg)
{
    size_t have = ld->cfg->warnings ? strlen(ld->cfg->warnings) : 0, n = strlen(msg);
    char *w = realloc(ld->cfg->warnings, have + n + 2);
    if (!w)
        return;
    memcpy(w + have, msg, n);
    memcpy(w + have + n, "\n", 2);
    ld->cfg->warnings = w;
}

static const struct key *find_key(const char *section, const char *name, bool *is_file)
{
    *is_file = false;
    for (size_t i = 0; i < NKEYS; i++) {
        if (strcmp(keys[i].section, section) != 0)
            continue;
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
        size_t n = strlen(keys[i].name);
        if (keys[i].type == K_SECRET && strncmp(name, keys[i].name, n) == 0 &&
            strcmp(name + n, "_file") == 0) {
            *is_file = true;
            return &keys[i];
        }
    }
    return NULL;
}

static bool section_known(const char *section)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].section, section) == 0)
            return true;
    return false;
}

/* Applies one value from a source; where names the source for messages. */
static void apply(struct loader *ld, const struct key *k, bool is_file, const char *value,
                  const char *where)
{
    size_t idx = (size_t)(k - keys);
    char msg[512];
    if ((is_file && ld->direct[idx]) || (!is_file && ld->viafile[idx])) {
        snprintf(msg, sizeof msg, "[%s] %s and %s_file are both set: choose one", k->section,
                 k->name, k->name);
        fail(ld, where, msg);
        return;
    }
    (is_file ? ld->viafile : ld->direct)[idx] = true;
    char *secret = NULL;
    if (is_file) {
        char why[384], warn[384];
        if (read_secret_file(value, &secret, warn, sizeof warn, why, sizeof why) != TH_E_OK) {
            snprintf(msg, sizeof msg, "[%s] %s_file: %s", k->section, k->name, why);
            fail(ld, where, msg);
            return;
        }
        if (warn[0]) {
            snprintf(msg, sizeof msg, "%s: [%s] %s_file: %s", where, k->section, k->name, warn);
            add_warning(ld, msg);
        }
        value = secret;
    }
    if (set_value(ld->cfg, k, value, msg, sizeof msg) != TH_E_OK)
        fail(ld, where, msg);
    if (secret) {
        memset(secret, 0, strlen(secret));
        free(secret);
    }
}

/*
 * A value's text, as the documentation writes it: a comment may follow a value on its line,
 * started by '#' or ';' after a space or tab (libinih removes the ';' kind itself), and a value in
 * double quotes is taken verbatim, '#' and all. So `audience = api://default   # the default`
 * is "api://default", `url = https://example.com/#x` keeps its '#', and `"a # b"` is "a # b".
 */
static char *value_text(char *v)
{
    if (v[0] == '"') {
        char *close = strchr(v + 1, '"');
        if (close && (close[1] == '\0' || close[1] == ' ' || close[1] == '\t')) {
            char *rest = close + 1 + strspn(close + 1, " \t");
            if (*rest == '\0' || *rest == '#' || *rest == ';') {
                *close = '\0';
                return v + 1;
            }
        }
    }
    for (char *p = v; *p; p++) {
        if ((*p == '#' || *p == ';') && p > v && (p[-1] == ' ' || p[-1] == '\t')) {
            *p = '\0';
            break;
        }
    }
    size_t n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        v[--n] = '\0';
    return v;
}

static int on_ini(void *user, const char *section, const char *name, const char *value)
{
    struct loader *ld = user;
    char where[4200];
    snprintf(where, sizeof where, "%s:%d", ld->path, ld->line);
    bool is_file;
    const struct key *k = find_key(section, name, &is_file);
    if (!k) {
        char msg[256];
        if (!section_known(section))
            snprintf(msg, sizeof msg, "unknown section [%.60s]", section);
        else
            snprintf(msg, sizeof msg, "[%s] %.60s: unknown key", section, name);
        fail(ld, where, msg);
        return 1;
    }
    char *v = strdup(value);
    if (!v) {
        fail(ld, where, "out of memory");
        return 1;
    }
    apply(ld, k, is_file, value_text(v), where);
    free(v);
    return 1;
}

/*
 * libinih's reader: an fgets that counts lines (for messages) and refuses a line longer than
 * libinih's buffer, which it would otherwise split and parse as two lines.
 */
static char *read_line(char *str, int num, void *stream)
{
    struct loader *ld = stream;
    char *r = fgets(str, num, ld->f);
    if (!r)
        return NULL;
    ld->line++;
    size_t n = strlen(str);
    if (n == (size_t)num - 1 && str[n - 1] != '\n' && !feof(ld->f)) {
        char where[4200], msg[64];
        snprintf(where, sizeof where, "%s:%d", ld->path, ld->line);
        snprintf(msg, sizeof msg, "line longer than %d characters", LINE_MAX_LEN);
        fail(ld, where, msg);
        return NULL;
    }
    return r;
}

static void load_file(struct loader *ld, const char *path)
{
    ld->path = path;
    ld->f = fopen(path, "r");
    if (!ld->f) {
        char msg[256];
        snprintf(msg, sizeof msg, "cannot open: %s", strerror(errno));
        fail(ld, path, msg);
        return;
    }
    int rc = ini_parse_stream(read_line, ld, on_ini, ld);
    fclose(ld->f);
    ld->f = NULL;
    if (rc > 0) { /* a syntax error libinih found (the handler never saw the line) */
        char where[4200];
        snprintf(where, sizeof where, "%s:%d", path, rc);
        fail(ld, where, "syntax error (expected [section] or key = value)");
    } else if (rc < 0) {
        fail(ld, path, "cannot read");
    }
}

/* "TELEHOOK_SERVER_LISTEN" for (server, listen), plus "_FILE" when file. */
static void env_name(const struct key *k, bool file, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "TELEHOOK_%s_%s%s", k->section, k->name, file ? "_FILE" : "");
    for (int i = 0; i < n && (size_t)i < outlen; i++)
        out[i] = (char)toupper((unsigned char)out[i]);
}

static void load_env(struct loader *ld, char *const *envp)
{
    memset(ld->direct, 0, sizeof ld->direct);
    memset(ld->viafile, 0, sizeof ld->viafile);
    for (char *const *e = envp; *e; e++) {
        if (strncmp(*e, "TELEHOOK_", 9) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        size_t nlen = (size_t)(eq - *e);
        bool matched = false, known_section = false;
        for (size_t i = 0; i < NKEYS && !matched; i++) {
            char name[128];
            size_t slen = strlen(keys[i].section);
            if (nlen > 9 + slen && strncasecmp(*e + 9, keys[i].section, slen) == 0 &&
                (*e)[9 + slen] == '_')
                known_section = true;
            for (int file = 0; file <= (keys[i].type == K_SECRET); file++) {
                env_name(&keys[i], file, name, sizeof name);
                if (strlen(name) == nlen && strncmp(*e, name, nlen) == 0) {
                    apply(ld, &keys[i], file, eq + 1, name);
                    matched = true;
                    break;
                }
            }
        }
        /* A misspelt section (TELEHOOK_SERVR_LISTEN) is as wrong as a misspelt key: the
         * admin meant to set something. Only names of the TELEHOOK_SECTION_KEY shape count, and
         * TELEHOOK_CONFIG (the config file's path, read by the CLI) is not a key. */
        bool key_shaped = memchr(*e + 9, '_', nlen - 9) != NULL &&
                          !(nlen == 15 && strncmp(*e, "TELEHOOK_CONFIG", 15) == 0);
        if (!matched && (known_section || key_shaped)) {
            char where[128];
            snprintf(where, sizeof where, "%.*s", (int)(nlen > 100 ? 100 : nlen), *e);
            fail(ld, where,
                 known_section ? "unknown configuration variable"
                               : "unknown configuration variable: no such section (TELEHOOK_"
                                 "<SECTION>_<KEY>, as in `telehook config check`'s output)");
        }
    }
}

th_err th_config_load(struct th_config *cfg, const char *path, char *const *envp, char *err,
                      size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    struct loader ld = {.cfg = cfg, .err = err, .errlen = errlen, .result = TH_E_OK};
    err[0] = '\0';
    for (size_t i = 0; i < NKEYS; i++) {
        char where[64];
        snprintf(where, sizeof where, "default of %s.%s", keys[i].section, keys[i].name);
        if (keys[i].type == K_SECRET)
            set_string(str_field(cfg, &keys[i]), keys[i].def);
        else
            apply(&ld, &keys[i], false, keys[i].def, where);
    }
    memset(ld.direct, 0, sizeof ld.direct);
    if (ld.result == TH_E_OK && path)
        load_file(&ld, path);
    if (ld.result == TH_E_OK)
        load_env(&ld, envp ? envp : environ);
    if (ld.result != TH_E_OK) {
        th_config_release(cfg);
        return ld.result;
    }
    return TH_E_OK;
}

/* host part of server.listen, without brackets */
static void listen_host(const char *listen, char *out, size_t outlen)
{
    if (th_hostport_parse(listen, out, outlen, NULL) != TH_E_OK)
        out[0] = '\0';
}

/* Outbound trust: every CA file or directory set is usable; the webhook gets no code in clear. */
static th_err check_outbound(const struct th_config *cfg, char *err, size_t errlen)
{
    const struct {
        const char *name, *value;
    } files[] = {{"[tls] ca_file", cfg->tls_ca_file},
                 {"[aws] ca_file", cfg->aws_ca_file},
                 {"[twilio] ca_file", cfg->twilio_ca_file},
                 {"[webhook] ca_file", cfg->webhook_ca_file}};
    char why[512];
    for (size_t i = 0; i < TH_ARRAY_LEN(files); i++) {
        if (files[i].value && files[i].value[0] &&
            th_trust_check_file(files[i].value, why, sizeof why) != TH_E_OK) {
            snprintf(err, errlen, "%s: %s", files[i].name, why);
            return TH_E_CONFIG;
        }
    }
    if (cfg->tls_ca_path && cfg->tls_ca_path[0] &&
        th_trust_check_dir(cfg->tls_ca_path, why, sizeof why) != TH_E_OK) {
        snprintf(err, errlen, "[tls] ca_path: %s", why);
        return TH_E_CONFIG;
    }
    /* Every URL a request's code (or a provider's credentials) goes to: https, or http to a
     * loopback relay (and the tests' fakes). */
    const struct {
        const char *name, *value;
    } urls[] = {{"[webhook] url", cfg->webhook_url},
                {"[receipts] twilio_status_url", cfg->receipts_twilio_status_url},
                {"[twilio] base_url", cfg->twilio_base_url},
                {"[aws] endpoint", cfg->aws_endpoint}};
    for (size_t i = 0; i < TH_ARRAY_LEN(urls); i++) {
        if (urls[i].value && urls[i].value[0] &&
            th_trust_check_url(urls[i].value, why, sizeof why) != TH_E_OK) {
            snprintf(err, errlen, "%s: %s", urls[i].name, why);
            return TH_E_CONFIG;
        }
    }
    return TH_E_OK;
}

th_err th_config_check_serve(const struct th_config *cfg, char *err, size_t errlen)
{
    if (check_outbound(cfg, err, errlen) != TH_E_OK)
        return TH_E_CONFIG;
    /* A status callback Twilio signs with the account's auth token (API-key accounts too): no
     * token, nothing could be verified. */
    if (cfg->receipts_twilio_status_url && cfg->receipts_twilio_status_url[0] &&
        (!cfg->twilio_auth_token || !cfg->twilio_auth_token[0])) {
        snprintf(err, errlen,
                 "[receipts] twilio_status_url: needs [twilio] auth_token (Twilio "
                 "signs its callbacks with it, API keys or not)");
        return TH_E_CONFIG;
    }
    bool header = cfg->auth_mode == TH_AUTH_HEADER || cfg->auth_mode == TH_AUTH_EITHER;
    bool oauth = cfg->auth_mode == TH_AUTH_OAUTH2 || cfg->auth_mode == TH_AUTH_EITHER;
    if (header && (!cfg->auth_header_secret || !cfg->auth_header_secret[0])) {
        snprintf(err, errlen,
                 "[auth] header_secret: required with mode = %s; set header_secret_file, "
                 "or TELEHOOK_AUTH_HEADER_SECRET_FILE / TELEHOOK_AUTH_HEADER_SECRET",
                 cfg->auth_mode == TH_AUTH_HEADER ? "header" : "either");
        return TH_E_CONFIG;
    }
    if (header && strlen(cfg->auth_header_secret) < TH_AUTH_HEADER_SECRET_MIN) {
        snprintf(err, errlen,
                 "[auth] header_secret: shorter than %d bytes; choose a long random one, e.g. "
                 "head -c 32 /dev/urandom | base64 | tr -d '/+='",
                 TH_AUTH_HEADER_SECRET_MIN);
        return TH_E_CONFIG;
    }
    if (cfg->events_enabled && cfg->events_header_secret && cfg->events_header_secret[0] &&
        strlen(cfg->events_header_secret) < TH_AUTH_HEADER_SECRET_MIN) {
        snprintf(err, errlen, "[events] header_secret: shorter than %d bytes",
                 TH_AUTH_HEADER_SECRET_MIN);
        return TH_E_CONFIG;
    }
    if (cfg->events_enabled && (!cfg->events_header_secret || !cfg->events_header_secret[0]) &&
        cfg->auth_mode == TH_AUTH_OAUTH2) {
        snprintf(err, errlen,
                 "[events] header_secret: required with auth.mode = oauth2 (Okta's event hooks "
                 "send a header secret, never a token)");
        return TH_E_CONFIG;
    }
    /* The issuer and the JWKS URL say where the signing keys come from: over plain http anyone
     * on the path could hand us their own key and sign tokens. Loopback is for tests. */
    if (oauth && !th_url_https_or_loopback(cfg->auth_issuer)) {
        snprintf(err, errlen,
                 "[auth] issuer: required with mode = oauth2 or either, an https URL such as "
                 "https://example.okta.com/oauth2/default (plain http only to a loopback host: "
                 "127.0.0.0/8, ::1, localhost)");
        return TH_E_CONFIG;
    }
    if (oauth && cfg->auth_jwks_url && cfg->auth_jwks_url[0] &&
        !th_url_https_or_loopback(cfg->auth_jwks_url)) {
        snprintf(err, errlen,
                 "[auth] jwks_url: must be an https URL (plain http only to a loopback host: "
                 "127.0.0.0/8, ::1, localhost): over http anyone on the path could replace the "
                 "issuer's keys");
        return TH_E_CONFIG;
    }
    size_t nslen = strlen(cfg->log_emf_namespace);
    if (nslen == 0 || nslen > 255) {
        snprintf(err, errlen, "[log] emf_namespace: 1 to 255 characters (CloudWatch's limit)");
        return TH_E_CONFIG;
    }
    if (oauth && !cfg->auth_audience[0]) {
        snprintf(err, errlen, "[auth] audience: required with mode = oauth2 or either");
        return TH_E_CONFIG;
    }
    for (const char *p = cfg->auth_algorithms; oauth && *p;) {
        size_t n = strcspn(p, " ,");
        if (n &&
            !((n == 5 && strncmp(p, "RS256", 5) == 0) || (n == 5 && strncmp(p, "ES256", 5) == 0))) {
            snprintf(err, errlen,
                     "[auth] algorithms: only RS256 and ES256 are supported (got "
                     "'%.*s')",
                     (int)(n > 20 ? 20 : n), p);
            return TH_E_CONFIG;
        }
        p += n;
        p += strspn(p, " ,");
    }
    char host[256];
    listen_host(cfg->listen, host, sizeof host);
    if (cfg->auth_mode == TH_AUTH_NONE && !th_host_is_loopback(host)) {
        snprintf(err, errlen,
                 "[auth] mode = none accepts unauthenticated calls and is allowed only on a "
                 "loopback address, not on %s",
                 cfg->listen);
        return TH_E_CONFIG;
    }
    /* The blocks are keyed by the prefix's HMAC under guard.secret: a key drawn at each start
     * would leave nothing to share, list or clear, and the records no prefix to credit. */
    if (cfg->conversion_mode == 2 && !cfg->guard_secret[0]) {
        snprintf(err, errlen,
                 "[conversion] mode = enforce needs [guard] secret (prefixes are kept as HMAC "
                 "keys under it)");
        return TH_E_CONFIG;
    }
    if (!cfg->tls_cert[0] != !cfg->tls_key[0]) {
        snprintf(err, errlen,
                 "[server] tls_cert and tls_key go together: set both for HTTPS, neither for "
                 "plain HTTP");
        return TH_E_CONFIG;
    }
    return TH_E_OK;
}

void th_config_release(struct th_config *cfg)
{
    free(cfg->warnings);
    cfg->warnings = NULL;
    for (size_t i = 0; i < NKEYS; i++) {
        switch (keys[i].type) {
        case K_INT:
        case K_BOOL:
        case K_ENUM:
            break;
        default: {
            char **f = str_field(cfg, &keys[i]);
            if (*f && keys[i].type == K_SECRET)
                memset(*f, 0, strlen(*f));
            free(*f);
            *f = NULL;
        }
        }
    }
}

/*
 * store.url and guard.url as shown (config show, config check): a PostgreSQL URL may hold a
 * password, in its user-info (postgresql://user:PASSWORD@host/db) or as password=... (a URI
 * parameter or a conninfo keyword); it is shown as ******** (the rest helps to diagnose).
 */
static const char *shown_url(const char *v, char *buf, size_t cap)
{
    size_t n = 0;
    const char *scheme_end = strstr(v, "://");
    const char *user = scheme_end ? scheme_end + 3 : NULL;
    const char *at = NULL, *colon = NULL;
    for (const char *p = user; p && *p && *p != '/' && *p != '?'; p++)
        if (*p == '@')
            at = p;
    for (const char *p = user; at && p < at; p++)
        if (*p == ':' && !colon)
            colon = p;
    for (const char *p = v; *p && n + 12 < cap;) {
        if (colon && p == colon + 1) {
            n += (size_t)snprintf(buf + n, cap - n, "********");
            p = at;
            continue;
        }
        bool starts = p == v || p[-1] == ' ' || p[-1] == '?' || p[-1] == '&' || p[-1] == ':';
        if (starts && strncmp(p, "password=", 9) == 0) {
            n += (size_t)snprintf(buf + n, cap - n, "password=********");
            p += 9;
            if (*p == '\'') { /* a quoted conninfo value */
                for (p++; *p && *p != '\''; p++)
                    if (*p == '\\' && p[1])
                        p++;
                p += *p == '\'';
            } else {
                p += strcspn(p, " &");
            }
            continue;
        }
        buf[n++] = *p++;
    }
    buf[n] = '\0';
    return buf;
}

void th_config_print(const struct th_config *cfg, FILE *out)
{
    const char *section = NULL;
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        if (!section || strcmp(section, k->section) != 0) {
            fprintf(out, "%s[%s]\n", section ? "\n" : "", k->section);
            section = k->section;
        }
        struct th_config *c = (struct th_config *)cfg;
        switch (k->type) {
        case K_INT:
            fprintf(out, "%s = %d\n", k->name, *int_field(c, k));
            break;
        case K_BOOL:
            fprintf(out, "%s = %s\n", k->name,
                    *(bool *)(void *)((char *)c + k->off) ? "true" : "false");
            break;
        case K_ENUM:
            fprintf(out, "%s = %s\n", k->name, k->names[*int_field(c, k)]);
            break;
        case K_SECRET: {
            const char *v = *str_field(c, k);
            fprintf(out, "%s = %s\n", k->name, v && *v ? "********" : "");
            break;
        }
        default: {
            const char *v = *str_field(c, k);
            char url[1024];
            if (v && (k->off == offsetof(struct th_config, store_url) ||
                      k->off == offsetof(struct th_config, guard_url)))
                v = shown_url(v, url, sizeof url);
            fprintf(out, "%s = %s\n", k->name, v ? v : "");
        }
        }
    }
}

void th_config_each_key(th_config_key_fn fn, void *ud)
{
    for (size_t i = 0; i < NKEYS; i++)
        fn(ud, keys[i].section, keys[i].name, keys[i].def, keys[i].type == K_SECRET, keys[i].help);
}

void th_config_each_value(const struct th_config *cfg, th_config_value_fn fn, void *ud)
{
    struct th_config *c = (struct th_config *)cfg;
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        char num[24];
        switch (k->type) {
        case K_INT:
            snprintf(num, sizeof num, "%d", *int_field(c, k));
            fn(ud, k->section, k->name, 'i', num);
            break;
        case K_BOOL:
            fn(ud, k->section, k->name, 'b',
               *(bool *)(void *)((char *)c + k->off) ? "true" : "false");
            break;
        case K_ENUM:
            fn(ud, k->section, k->name, 's', k->names[*int_field(c, k)]);
            break;
        case K_SECRET: {
            const char *v = *str_field(c, k);
            fn(ud, k->section, k->name, 's', v && *v ? "********" : "");
            break;
        }
        default: {
            const char *v = *str_field(c, k);
            char url[1024];
            if (v && (k->off == offsetof(struct th_config, store_url) ||
                      k->off == offsetof(struct th_config, guard_url)))
                v = shown_url(v, url, sizeof url);
            fn(ud, k->section, k->name, 's', v ? v : "");
        }
        }
    }
}

void th_config_each_change(const struct th_config *a, const struct th_config *b,
                           th_config_change_fn fn, void *ud)
{
    struct th_config *x = (struct th_config *)a, *y = (struct th_config *)b;
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        bool same;
        switch (k->type) {
        case K_INT:
        case K_ENUM:
            same = *int_field(x, k) == *int_field(y, k);
            break;
        case K_BOOL:
            same = *(bool *)(void *)((char *)x + k->off) == *(bool *)(void *)((char *)y + k->off);
            break;
        default: {
            const char *u = *str_field(x, k), *v = *str_field(y, k);
            same = strcmp(u ? u : "", v ? v : "") == 0;
        }
        }
        if (!same)
            fn(ud, k->section, k->name);
    }
}

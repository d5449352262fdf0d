/* Error codes shared by every module: one X-macro list yields the enum, names and messages. */
#ifndef TH_COMMON_ERR_H
#define TH_COMMON_ERR_H

#define TH_ERRORS(X)                                                                               \
    X(OK, "ok")                                                                                    \
    X(NOMEM, "out of memory")                                                                      \
    X(INVAL, "invalid argument")                                                                   \
    X(CONFIG, "configuration error")                                                               \
    X(IO, "I/O error")                                                                             \
    X(STORE, "store error")                                                                        \
    X(JSON, "malformed JSON")                                                                      \
    X(REQUEST, "request cannot be served")                                                         \
    X(PHONE, "invalid phone number")                                                               \
    X(LOCALE, "invalid locale")                                                                    \
    X(NOTEMPLATE, "no template")                                                                   \
    X(TEMPLATE, "invalid template")                                                                \
    X(AUTH, "authentication failed")                                                               \
    X(TOOBIG, "too large")                                                                         \
    X(OVERLOAD, "overloaded")                                                                      \
    X(TIMEOUT, "deadline exceeded")                                                                \
    X(NOTFOUND, "not found")                                                                       \
    X(PROVIDER, "provider failed")                                                                 \
    X(BUSY, "resource busy")

typedef enum {
#define TH_ERR_ENUM(name, text) TH_E_##name,
    TH_ERRORS(TH_ERR_ENUM)
#undef TH_ERR_ENUM
        TH_E__COUNT
} th_err;

/* Human-readable message for an error code; never NULL. */
const char *th_strerror(th_err e);
/* Short symbolic name ("NOMEM"); never NULL. */
const char *th_errname(th_err e);

#endif

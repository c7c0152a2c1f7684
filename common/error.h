/* error.h - the one error convention of easgate.
 *
 * Every fallible function returns int: 0 on success or a negative EG_E* code. Functions that
 * produce a value write it through a ret_ parameter, only on success. eg_strerror() gives a
 * short constant English text for a code; it never allocates.
 */
#ifndef EG_ERROR_H
#define EG_ERROR_H

#define EG_MUST_CHECK __attribute__((warn_unused_result))

enum {
    EG_OK = 0,
    EG_ENOMEM = -1,        /* allocation failed */
    EG_EINVAL = -2,        /* invalid argument or input */
    EG_ELIMIT = -3,        /* input over a configured or compiled limit */
    EG_ENOTFOUND = -4,     /* no such object */
    EG_ECONFLICT = -5,     /* conflicts with existing state (e.g. same id, different body) */
    EG_ESTATE = -6,        /* operation not allowed in the object's current state */
    EG_EIO = -7,           /* operating-system I/O error (errno is meaningful) */
    EG_EDB = -8,           /* storage engine error */
    EG_EPARSE = -9,        /* malformed input (JSON, XML, CLIXML, config...) */
    EG_ETLS = -10,         /* TLS material or handshake problem */
    EG_EAUTH = -11,        /* authentication failed */
    EG_EPERM = -12,        /* permission denied */
    EG_EPROTO = -13,       /* peer violated the protocol */
    EG_ETIMEDOUT = -14,    /* operation timed out */
    EG_EUNAVAIL = -15,     /* peer unreachable or temporarily unavailable */
    EG_EUNSUPPORTED = -16, /* not supported (by this build or this peer) */
    EG_ESHUTDOWN = -17,    /* component is shutting down */
    EG_EAGAIN = -18,       /* try again later (transient) */
    EG_EREMOTE = -19,      /* the remote side reported an error (details alongside) */
    EG_EINTERNAL = -20,    /* invariant broken: a bug */
    EG__ECOUNT = 21
};

/* Short description of an EG_E* code (or "unknown error"). Never NULL, never allocated. */
const char *eg_strerror(int code);

/* Stable lower-case identifier of a code ("enomem"), for logs and metrics. Never NULL. */
const char *eg_errname(int code);

#endif

/* target.h - the Exchange target of the running daemon: building a bridge from a target
 * document, and the one swappable bridge the workers use, replaced when the console PUTs a new
 * document.
 *
 * Building (eg_target_build): onprem -> one psrp backend per server behind a multi-server bridge
 * (also for a single server, so that status always lists servers); online -> the REST backend
 * behind a multi-server bridge of one; dryrun -> the dry-run backend. Nothing is connected.
 *
 * The manager (eg_target_open ...): at start it loads <state_dir>/target.json (secrets opened
 * with the key file, created on first start) and builds its bridge; without a stored document it
 * uses the bootstrap bridge from the command line / configuration file. eg_target_put validates
 * a new document, builds its bridge, persists it, and only then swaps it in: calls in flight
 * finish on the old bridge, new calls go to the new one (exchange/bridge_swap.h). Any failure
 * before the swap leaves the stored document and the running bridge untouched. PUTs are
 * serialised; GET and status may run at any time. Nothing here logs or returns a secret.
 */
#ifndef EG_TARGET_H
#define EG_TARGET_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/command.h"
#include "agent/target_config.h"
#include "common/error.h"
#include "exchange/bridge.h"

/* Build the bridge for a validated document. state_dir holds files the backends read at run
 * time (ca_pem is written to <state_dir>/target-ca-<sha256 prefix>.pem, mode 0600). On success
 * *ret is a new bridge (free with eg_bridge_free). On failure why (may be NULL) says what was
 * refused, naming the member where that is known, never a secret.
 * Returns 0, EG_EINVAL (a backend refused the options), EG_EIO (the CA file could not be
 * written), EG_ENOMEM, or a backend's code. */
int eg_target_build(const struct eg_target_config *c, const char *state_dir, struct eg_bridge **ret,
                    char *why, size_t whylen) EG_MUST_CHECK;

/* Makes the bootstrap bridge when no document is stored (called at most once, from
 * eg_target_open). Returns 0 with *ret set, or a negative EG_E* code. */
typedef int (*eg_target_bootstrap_fn)(void *ctx, struct eg_bridge **ret);

struct eg_target_opts {
    const char *state_dir;            /* required; target.json lives here */
    const char *key_file;             /* NULL = <state_dir>/secret.key */
    eg_target_bootstrap_fn bootstrap; /* required */
    void *bootstrap_ctx;
    const char *bootstrap_kind; /* shown as status "kind" for the bootstrap bridge ("dryrun") */
};

struct eg_target;

/* Open the key file (creating it), load the stored document if there is one and build its
 * bridge, else call the bootstrap. On failure why (may be NULL) names the file and the problem.
 * Returns 0, EG_EINVAL, EG_EIO, EG_EPERM (key file mode), EG_EAUTH (the stored secrets do not
 * open with the key), EG_EPARSE, EG_ENOMEM, or the bootstrap's / a backend's code. */
int eg_target_open(const struct eg_target_opts *o, struct eg_target **ret, char *why,
                   size_t whylen) EG_MUST_CHECK;

/* The swappable bridge for the workers (borrowed; valid until eg_target_free). */
struct eg_bridge *eg_target_bridge(struct eg_target *t);

/* Where the running bridge came from. */
enum eg_target_source { EG_TARGET_SOURCE_BOOTSTRAP, EG_TARGET_SOURCE_CONSOLE };
enum eg_target_source eg_target_source(struct eg_target *t);
/* Revision of the stored document (0 = none). */
int64_t eg_target_revision(struct eg_target *t);

/* The stored document's retry.deadline_ms, or 0 when it sets none (or no document is stored). */
int64_t eg_target_retry_deadline_ms(struct eg_target *t);

/* Where a PUT failed. */
enum eg_target_stage {
    EG_TARGET_STAGE_PARSE, /* the document is invalid: err.v names the field */
    EG_TARGET_STAGE_BUILD, /* valid, but its bridge could not be built: err.v.detail says why */
    EG_TARGET_STAGE_STORE, /* the state file could not be written */
    EG_TARGET_STAGE_APPLY, /* stored, but the swap failed (out of memory): applies at restart */
};

struct eg_target_error {
    enum eg_target_stage stage;
    struct eg_verr v;
};

/* Replace the target with the document in body (len bytes). On success *ret_doc (may be NULL)
 * is the stored document as GET shows it (new reference). Returns 0; on failure a negative
 * EG_E* code with err->stage: PARSE (EG_EPARSE, EG_EINVAL, EG_ELIMIT as eg_target_config_parse),
 * BUILD (the build's code), STORE (EG_EIO, EG_ETLS, EG_ENOMEM), APPLY (EG_ENOMEM). */
int eg_target_put(struct eg_target *t, const char *body, size_t len, json_t **ret_doc,
                  struct eg_target_error *err) EG_MUST_CHECK;

/* The stored document with secrets redacted (new reference in *ret). Returns 0, EG_ENOTFOUND
 * (nothing stored: the bootstrap bridge is in use), EG_ENOMEM. */
int eg_target_get(struct eg_target *t, json_t **ret) EG_MUST_CHECK;

/* The upload settings of the stored document, for the uploader (agent/uploader): *ret_url and
 * *ret_hmac_key are new strings, NULL when not set (the key is a secret: free it with
 * eg_secret_free); *ret_revision is the document's revision (0 = none stored: no upload).
 * Returns 0, EG_EINVAL, EG_ENOMEM (then nothing is returned). */
int eg_target_upload(struct eg_target *t, char **ret_url, char **ret_hmac_key,
                     int64_t *ret_revision) EG_MUST_CHECK;

/* Status of the running target for GET /api/v1/status: eg_bridge_status() of the current
 * bridge ("kind", "version", "servers": [{"url", "state", "last_error"}...]) plus "source"
 * ("console" or "bootstrap"), "revision" and "retiring" (replaced bridges still finishing
 * calls). New reference; NULL on allocation failure. */
json_t *eg_target_status(struct eg_target *t);

/* Free the manager and its bridges. No bridge call may be in flight (stop the workers first).
 * Accepts NULL. */
void eg_target_free(struct eg_target *t);

#endif

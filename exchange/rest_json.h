/* rest_json.h - the payloads of Exchange Online's REST InvokeCommand (psrp-wire.md §16).
 *
 * Request: a structured command (exchange/psrp_objects.h) as {"CmdletInput":{"CmdletName":..,
 * "Parameters":{..}}}: switches are true, $null is null, string arrays are arrays, a hashtable
 * (@{Add=..;Remove=..}) is an object with "@odata.type":"#Exchange.GenericHashTable".
 * Response: a page {"value":[..],"@odata.nextLink":..}, each value object turned into an Obj
 * with <Props> so that the catalogue reads it as it reads a CLIXML object (annotations
 * "X@data.type":"System.DateTime" give a DateTime). Errors: {"error":{"code","message",
 * "details":[{"message":"Code|ExceptionType|Message"}],"innererror":{..}}}, an X-ExceptionType
 * header, or a non-JSON text, with the HTTP status and Retry-After, classified into the stable
 * codes of on-prem (exchange/classify.h).
 *
 * Every JSON text is parsed with limits: at most EG_REST_MAX_RESPONSE_BYTES bytes and
 * EG_REST_MAX_JSON_DEPTH levels of nesting (over them: EG_ELIMIT, never truncated), duplicate
 * keys rejected. Nothing here logs; parse errors never quote the input.
 */
#ifndef EG_REST_JSON_H
#define EG_REST_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "exchange/bridge.h"
#include "exchange/classify.h"
#include "exchange/clixml.h"
#include "exchange/psrp_objects.h"

/* Parse a JSON text with the limits above. On success *ret is a new reference.
 * Returns 0, EG_ELIMIT, EG_EPARSE, EG_ENOMEM. */
int eg_rest_json_load(const char *text, size_t len, json_t **ret) EG_MUST_CHECK;

/* The request body of cmd. Values: Nil, S, B, integer kinds, Sg/Db, lists, hashtables (string
 * keys) and objects with a base value (an enum: its ToString); a switch is true. On success *ret
 * is a new NUL-terminated string (eg_free) of *ret_len bytes. Returns 0, EG_EINVAL (a
 * positional argument, or a value kind REST cannot carry), EG_ENOMEM. */
int eg_rest_command_body(const struct eg_ps_command *cmd, char **ret,
                         size_t *ret_len) EG_MUST_CHECK;

/* One page of a 2xx answer. */
struct eg_rest_page {
    json_t *doc;           /* the parsed answer (owned) */
    json_t *values;        /* its "value" array (borrowed from doc) */
    const char *next_link; /* "@odata.nextLink", or NULL (borrowed from doc) */
};

/* Parse a page: an object whose "value" is an array of objects (an empty body is a page
 * without values). Returns 0, EG_EPROTO (another shape, a next link that is not a string),
 * EG_ELIMIT, EG_EPARSE, EG_ENOMEM. Clear with eg_rest_page_clear. */
int eg_rest_parse_page(const char *body, size_t len, struct eg_rest_page *ret) EG_MUST_CHECK;
void eg_rest_page_clear(struct eg_rest_page *p);

/* A value object as an Obj (TN "Exchange.GenericHashTable") whose <Props> are its members in
 * order, annotations ("@..." and "X@...") left out: string -> S (DateTime when annotated
 * System.DateTime and readable), integer -> I32 or I64, real -> Db, true/false -> B, null ->
 * Nil, array -> string[] when every item is a string, else a list, object -> a nested Obj. On
 * success *ret is a new value. Returns 0, EG_EINVAL (not an object), EG_ELIMIT (deeper than
 * EG_REST_MAX_JSON_DEPTH), EG_ENOMEM. */
int eg_rest_object_to_value(const json_t *obj, struct eg_ps_value **ret) EG_MUST_CHECK;

/* True when link may be followed with the bearer token: an absolute http(s) URL of the same
 * scheme, host and port as base, without user info. */
bool eg_rest_link_ok(const char *base, const char *link);

/* True when the bearer token or the client assertion may be sent to url: https, or http when
 * allow_http is set and the host is a loopback address (tests against the mock). */
bool eg_rest_url_allowed(const char *url, bool allow_http);

/* Retry-After (delta seconds or an HTTP date) in ms from now_ms (wall clock), at most
 * EG_REST_MAX_RETRY_AFTER_MS; -1 when absent or unreadable. */
int64_t eg_rest_retry_after_ms(const char *value, int64_t now_ms);

/* A non-2xx answer of InvokeCommand (or of the token endpoint, without a target) -> out:
 * status 429 or a throttling text: `throttled` (transient, retry_after_ms from Retry-After or
 * the text); otherwise the exception type and message (details[0] "Code|Type|Message", else
 * X-ExceptionType and error.message, else innererror) classified as on-prem
 * (eg_classify_exception), and what that cannot tell by the status: 400 invalid_argument, 401
 * and 403 permission_denied, 404 mailbox_/device_not_found, 408 and 504 timeout (transient),
 * 502/503 exchange_unreachable (transient), other 5xx internal (transient), with Retry-After
 * honoured for 503/504/408 as well. exchange_type/exchange_message carry Exchange's words. */
struct eg_rest_answer {
    long status;
    const char *content_type;   /* may be NULL */
    const char *exception_type; /* the X-ExceptionType header, or NULL */
    const char *retry_after;    /* the Retry-After header, or NULL */
    const char *body;
    size_t body_len;
};
void eg_rest_classify(const struct eg_rest_answer *a, enum eg_classify_target target,
                      struct eg_bridge_error *out);

#endif

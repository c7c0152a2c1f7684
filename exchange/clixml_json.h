/* clixml_json.h - render a CLIXML value (exchange/clixml.h) as JSON, for people and test tools:
 * the mock Exchange's call recorder and the easgate-ps tool (one output object per JSON line).
 *
 * Mapping:
 *   Nil -> null; S URI XD SBK -> string; B -> true/false; integers -> number (a U64 above
 *   INT64_MAX -> its decimal string); Sg Db -> number (NaN and infinities -> "NaN", "Infinity",
 *   "-Infinity"); D (decimal) -> its text as a string; C -> a one-character string (a lone
 *   surrogate -> "\uFFFD"); G -> "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (lower case); DT -> RFC
 * 3339 (the wire text, which carries "Z" or an offset; a DT without zone gets "Z" since its wall
 * clock is read as UTC); TS -> its xs:duration text; Version -> its text; BA -> base64 string; SS
 * -> the string "[SecureString]" (never the ciphertext); PR -> {"_type":"ProgressRecord",
 *   "activity","activity_id","current_operation","parent_activity_id","percent_complete",
 *   "record_type","seconds_remaining","status_description"}.
 *   Obj with a list container (LST IE STK QUE) -> array of its items;
 *   Obj with a DCT -> object keyed by each key's string form (S as is; other primitives as their
 *     JSON text; a later duplicate key wins);
 *   any other Obj -> {"_types":[...] (if any), "_tostring":.. (if any), "_value":<base> (if
 *     any), then every <Props> member, then every <MS> member (a later duplicate name wins)}.
 * Shared nodes (<Ref>) are rendered at each use.
 */
#ifndef EG_CLIXML_JSON_H
#define EG_CLIXML_JSON_H

#include <jansson.h>
#include <stddef.h>

#include "common/error.h"
#include "exchange/clixml.h"

/* Render v. On success *ret is a new reference (json_decref).
 * Returns 0, EG_EINVAL (v or ret NULL, a string that is not valid UTF-8, an invalid kind),
 * EG_ELIMIT (nesting deeper than EG_CLIXML_MAX_DEPTH, or more than EG_CLIXML_MAX_VALUES nodes
 * rendered, counting every use of a shared node), EG_ENOMEM. */
int eg_clixml_to_json(const struct eg_ps_value *v, json_t **ret) EG_MUST_CHECK;

/* Same, serialized compactly on one line (keys in insertion order, no trailing newline).
 * On success *ret is a NUL-terminated string freed with eg_free (after eg_alloc_init(); free()
 * otherwise, as json_dumps allocates through jansson's allocator). */
int eg_clixml_to_json_text(const struct eg_ps_value *v, char **ret) EG_MUST_CHECK;

#endif

/* json.h - jansson helpers shared by every parser of outside JSON. */
#ifndef EG_JSON_H
#define EG_JSON_H

#include <jansson.h>
#include <stddef.h>

#include "common/error.h"

/* Parse buf[0..len) with duplicate keys rejected, telling allocation failure from malformed
 * input. jansson leaves the error text empty when an allocation fails, except for a failed
 * string buffer, which it reports as a syntax error ("invalid token", "string or '}' expected");
 * a second parse tells those apart (it fails the same way again only if the text really is
 * malformed), so malformed input costs two parses. On success *ret is a new reference.
 * Returns 0, EG_ENOMEM or EG_EPARSE (jerr filled with line, column and text). */
int eg_json_load(const char *buf, size_t len, json_t **ret, json_error_t *jerr) EG_MUST_CHECK;

#endif

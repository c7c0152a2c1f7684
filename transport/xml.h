/* xml.h - hardened loading of outside XML (WS-Man responses and requests, captured envelopes).
 *
 * One place that knows libxml2's pitfalls: no network, no entity substitution, no DOCTYPE at all
 * (so no entity is ever declared), a NUL byte in UTF-8 input is malformed (libxml2 would stop
 * there and accept the prefix), bounded depth, nodes and attributes per tag, allocation failure
 * told apart from malformed input, and libxml2's per-thread error handlers silenced for the parse
 * and restored afterwards. Elements are then matched by namespace URI and local name, never by
 * prefix.
 */
#ifndef EG_XML_H
#define EG_XML_H

#include <libxml/tree.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

/* Parse xml (len bytes, UTF-8 or UTF-16 with a BOM) of at most max_len bytes. On success *ret is
 * the document (caller frees with xmlFreeDoc). Returns 0, EG_EINVAL (xml NULL), EG_ELIMIT (over
 * max_len, too deep, too many nodes or attributes), EG_EPARSE (malformed, a DOCTYPE, a NUL byte,
 * no root element), EG_ENOMEM. */
int eg_xml_read(const char *xml, size_t len, size_t max_len, xmlDocPtr *ret) EG_MUST_CHECK;

/* True when n is an element with this namespace URI and local name. */
bool eg_xml_is(const xmlNode *n, const char *ns, const char *name);

/* First element child of parent (NULL allowed) with this namespace URI and local name. */
xmlNode *eg_xml_child(const xmlNode *parent, const char *ns, const char *name);

#endif

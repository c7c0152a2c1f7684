/* psrp_capture.h - decode captured WS-Man traffic (one SOAP envelope per input) into JSON.
 *
 * For admins with a debugging proxy, and for tests over recorded traffic (easgate-ps decode).
 * Each envelope yields one JSON object {"source", "action", "direction"?, "fault"?} and one
 * object per PSRP message completed in it: {"source", "direction" ("client->server" or
 * "server->client"), "object_id", "type" (name), "type_value", "rpid", "pid", "data" (the
 * CLIXML rendered as JSON, exchange/clixml_json.h)}. Fragments of one message spread over
 * several envelopes are reassembled when the envelopes are fed in order (one defragmenter per
 * direction); whatever is still incomplete at the end is reported by eg_psrp_capture_finish as
 * {"partial": true, "direction", "objects_in_progress"}.
 * PSRP data is found in creationXml, connectXml, connectResponseXml, rsp:Arguments and
 * rsp:Stream (inside rsp:Send: client to server; inside rsp:ReceiveResponse: server to client).
 */
#ifndef EG_PSRP_CAPTURE_H
#define EG_PSRP_CAPTURE_H

#include <jansson.h>
#include <stddef.h>

#include "common/error.h"

struct eg_psrp_capture;

/* Called once per JSON object; takes over the reference. Return non-zero to stop. */
typedef int (*eg_psrp_capture_emit)(void *ctx, json_t *obj);

int eg_psrp_capture_new(struct eg_psrp_capture **ret) EG_MUST_CHECK;
void eg_psrp_capture_free(struct eg_psrp_capture *c);

/* Decode one envelope (xml, len bytes) named source. Returns 0, EG_EPARSE (not XML, bad
 * base64, undecodable CLIXML), EG_EPROTO (not a SOAP envelope, bad fragments), EG_ELIMIT,
 * EG_ENOMEM, or the emitter's non-zero value. why (size bytes) says what failed. */
int eg_psrp_capture_feed(struct eg_psrp_capture *c, const char *source, const char *xml, size_t len,
                         eg_psrp_capture_emit emit, void *ctx, char *why,
                         size_t size) EG_MUST_CHECK;

/* Report messages left incomplete. Returns the number of directions with partial messages
 * (0 when everything was complete) or a negative EG_E*. */
int eg_psrp_capture_finish(struct eg_psrp_capture *c, eg_psrp_capture_emit emit, void *ctx);

#endif

/* psrp_fragment.h - MS-PSRP 2.2.4 fragments: encoding, splitting a message, and reassembly.
 *
 * A PSRP message travels as one or more fragments; a creationXml, rsp:Arguments or rsp:Stream
 * value is the base64 of one or more whole fragments laid end to end, possibly of different
 * messages. Wire layout (all integers big-endian):
 *
 *   0  u64 ObjectId     one per message, from a per-sender counter
 *   8  u64 FragmentId   0, 1, 2 ... within the object
 *   16 u8  flags        0x01 S (start), 0x02 E (end); other bits ignored on decode, never set
 *   17 u32 BlobLength
 *   21 ... Blob         a slice of the message bytes
 *
 * This module never looks inside the message bytes (see psrp_message.h for that). Nothing here
 * logs; protocol violations come back as EG_EPROTO with a short reason text.
 */
#ifndef EG_PSRP_FRAGMENT_H
#define EG_PSRP_FRAGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define EG_PSRP_FRAGMENT_HEADER_LEN 21
#define EG_PSRP_FRAG_START          0x01u
#define EG_PSRP_FRAG_END            0x02u

/* One fragment. After eg_psrp_fragment_decode, blob points into the caller's buffer (borrowed:
 * valid as long as that buffer is). */
struct eg_psrp_fragment {
    uint64_t object_id;
    uint64_t fragment_id;
    bool start; /* S */
    bool end;   /* E */
    const uint8_t *blob;
    uint32_t blob_len;
};

/* ---- single fragments ---- */

/* Decode the fragment at the start of buf (len bytes, which may hold more fragments after it).
 * Blobs are not copied: ret->blob points into buf. max_blob bounds BlobLength (use
 * EG_PSRP_MAX_FRAGMENT_BLOB unless you have a tighter bound). On success *ret is the fragment and
 * *ret_consumed (may be NULL) its size, header included.
 * Returns 0, EG_EPARSE (fewer than 21 bytes, or the blob runs past len) or EG_ELIMIT (BlobLength
 * over max_blob; checked before the truncation test). */
int eg_psrp_fragment_decode(const uint8_t *buf, size_t len, uint32_t max_blob,
                            struct eg_psrp_fragment *ret, size_t *ret_consumed) EG_MUST_CHECK;

/* Write the 21-byte header of f into out (f->blob is not read). Flags get only S and E. */
void eg_psrp_fragment_header_write(const struct eg_psrp_fragment *f,
                                   uint8_t out[EG_PSRP_FRAGMENT_HEADER_LEN]);

/* Encode f (header + blob) into out, which has cap bytes; *ret_len (may be NULL) gets
 * 21 + blob_len. Returns 0, EG_EINVAL (blob NULL with a non-zero length) or EG_ELIMIT (cap too
 * small). */
int eg_psrp_fragment_encode(const struct eg_psrp_fragment *f, uint8_t *out, size_t cap,
                            size_t *ret_len) EG_MUST_CHECK;

/* ---- fragmenter ---- */

/* One message cut into fragments: all fragments encoded back to back in data (len bytes);
 * fragment i is data[offsets[i] .. offsets[i + 1]), so any run i..j of them is one contiguous
 * slice, ready to be base64-encoded into a single creationXml/Arguments/Stream value. */
struct eg_psrp_fragments {
    uint8_t *data;
    size_t len;
    size_t *offsets; /* n + 1 entries; offsets[0] = 0, offsets[n] = len */
    size_t n;        /* at least 1 */
    uint64_t object_id;
};

/* Number of fragments eg_psrp_fragment_message makes for a message of msg_len bytes with the
 * given max_fragment_size (> 21); 0 if max_fragment_size is too small. */
size_t eg_psrp_fragment_count(size_t msg_len, size_t max_fragment_size);

/* Split msg (msg_len bytes, possibly 0) into fragments of at most max_fragment_size bytes each,
 * header included (must be > 21: at least one blob byte per fragment; the caller derives it from
 * MaxEnvelopeSize minus the envelope overhead and the base64 expansion). Every fragment but the
 * last is full; an empty message gives one S|E fragment with an empty blob. The ObjectId is
 * *next_object_id, which is then incremented (only on success); the caller owns the counter, one
 * per sender (runspace pool), and chooses its start (clients start at 1).
 * On success *ret is new (free with eg_psrp_fragments_free).
 * Returns 0, EG_EINVAL (max_fragment_size <= 21, NULL msg with msg_len > 0), EG_ELIMIT (msg_len
 * over EG_PSRP_MAX_MESSAGE) or EG_ENOMEM. */
int eg_psrp_fragment_message(const uint8_t *msg, size_t msg_len, size_t max_fragment_size,
                             uint64_t *next_object_id,
                             struct eg_psrp_fragments **ret) EG_MUST_CHECK;

void eg_psrp_fragments_free(struct eg_psrp_fragments *f);

/* ---- defragmenter (reassembly) ---- */

/* Bounds of one defragmenter. A zero field means the compiled default from common/limits.h. */
struct eg_psrp_defrag_limits {
    size_t max_message;     /* bytes of one message; default EG_PSRP_MAX_MESSAGE */
    size_t max_in_progress; /* objects partly received; default EG_PSRP_MAX_IN_PROGRESS */
    size_t max_buffered;    /* bytes of all partial messages together; EG_PSRP_MAX_BUFFERED */
    uint32_t max_blob; /* BlobLength in eg_psrp_defrag_feed_buffer; EG_PSRP_MAX_FRAGMENT_BLOB */
};

/* Reassembles the messages of one sender (use one per direction and runspace pool). Fragments
 * of different objects may interleave arbitrarily, across any number of feeds. For each ObjectId
 * it checks that FragmentIds run 0, 1, 2 ... with S on the first and E on the last, and queues
 * each message when its E fragment arrives (completion order). Memory grows with the data
 * received, never with a preallocated guess. Not thread-safe.
 *
 * Errors are sticky: after a feed fails, the defragmenter refuses every later feed with the same
 * code (a stream that broke the protocol or a limit cannot be trusted to resynchronise; rebuild
 * the session). Messages completed before the failure can still be taken. */
struct eg_psrp_defrag;

/* lim may be NULL (all defaults). On success *ret is new (free with eg_psrp_defrag_free).
 * Returns 0 or EG_ENOMEM. */
int eg_psrp_defrag_new(const struct eg_psrp_defrag_limits *lim,
                       struct eg_psrp_defrag **ret) EG_MUST_CHECK;

/* Frees everything, including messages not yet taken. Accepts NULL. */
void eg_psrp_defrag_free(struct eg_psrp_defrag *d);

/* Feed one fragment (its blob is copied only when needed; the caller keeps its buffer).
 * Returns 0, EG_EPROTO (see eg_psrp_defrag_reason), EG_ELIMIT (message, object or buffered-byte
 * limit), EG_ENOMEM, or the sticky code of an earlier failure. Protocol violations:
 *   - S on a fragment of an object already in progress;
 *   - a FragmentId other than the next one of its object (duplicate, or gap);
 *   - no S on the first fragment of an object (FragmentId 0), or a fragment for an unknown object
 *     (e.g. fragment 1 before fragment 0);
 *   - S with a FragmentId other than 0. */
int eg_psrp_defrag_feed(struct eg_psrp_defrag *d, const struct eg_psrp_fragment *f) EG_MUST_CHECK;

/* Decode and feed every fragment in buf (len bytes of whole fragments, e.g. one decoded Stream
 * value). Returns what eg_psrp_fragment_decode or eg_psrp_defrag_feed returned for the first
 * fragment that failed (EG_EPARSE for a truncated tail; the fragments before it were fed), or 0. */
int eg_psrp_defrag_feed_buffer(struct eg_psrp_defrag *d, const uint8_t *buf,
                               size_t len) EG_MUST_CHECK;

/* Take the oldest completed message: *ret_data (caller frees with eg_free; never NULL, with a NUL
 * byte after the data for convenience), *ret_len, and *ret_object_id (may be NULL).
 * Returns 0, or EG_ENOTFOUND when no complete message is waiting. */
int eg_psrp_defrag_pop(struct eg_psrp_defrag *d, uint8_t **ret_data, size_t *ret_len,
                       uint64_t *ret_object_id) EG_MUST_CHECK;

/* Completed messages waiting to be taken. */
size_t eg_psrp_defrag_ready(const struct eg_psrp_defrag *d);

/* Objects started but not yet complete (a message boundary has been reached when this is 0). */
size_t eg_psrp_defrag_in_progress(const struct eg_psrp_defrag *d);

/* Short English reason of the failure (e.g. "object 7: duplicate fragment 1"), or "" while no
 * feed has failed. Never NULL; valid until the next call on d. Contains no message data. */
const char *eg_psrp_defrag_reason(const struct eg_psrp_defrag *d);

#endif

/* psrp_message.h - MS-PSRP 2.2.1 messages: the 40-byte header, message types, and GUIDs.
 *
 * Wire layout of a message (the bytes that psrp_fragment.h cuts into fragments):
 *
 *   0  u32 LE  Destination   1 = client, 2 = server
 *   4  u32 LE  MessageType   enum eg_psrp_msg_type (unknown values are kept as numbers)
 *   8  16      RPID          runspace pool id, .NET Guid.ToByteArray() layout
 *   24 16      PID           pipeline id, same layout; all zero for pool-level messages
 *   40 ...     Data          UTF-8 CLIXML; server -> client data starts with a BOM (EF BB BF)
 *
 * The data is an opaque byte buffer here (exchange/clixml.h parses it). GUIDs are kept as the 16
 * bytes that were on the wire, so a server can echo exactly what a client sent; text conversion
 * interprets them in .NET layout (Data1 u32 LE, Data2 u16 LE, Data3 u16 LE, Data4 as is).
 */
#ifndef EG_PSRP_MESSAGE_H
#define EG_PSRP_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "exchange/psrp_fragment.h"

#define EG_PSRP_MESSAGE_HEADER_LEN 40

/* ---- GUIDs ---- */

/* A GUID as its 16 wire bytes (.NET Guid.ToByteArray() layout when made by this module). */
struct eg_psrp_guid {
    uint8_t b[16];
};

/* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" plus NUL. */
#define EG_PSRP_GUID_STRLEN 37

/* Canonical 8-4-4-4-12 text of g read in .NET layout, lower-case (upper = false, the canonical
 * form) or upper-case (upper = true, as WS-Man ShellId/CommandId/MessageID use). Returns out. */
char *eg_psrp_guid_to_string(const struct eg_psrp_guid *g, bool upper,
                             char out[EG_PSRP_GUID_STRLEN]);

/* Parse 8-4-4-4-12 hex text (either case, optionally inside one pair of braces, nothing else)
 * into .NET layout bytes. Returns 0 or EG_EPARSE. */
int eg_psrp_guid_from_string(const char *s, struct eg_psrp_guid *ret) EG_MUST_CHECK;

/* New random (version 4, RFC 4122 variant) GUID from getrandom() or /dev/urandom; its text form
 * reads xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx. Returns 0 or EG_EIO. */
int eg_psrp_guid_generate(struct eg_psrp_guid *ret) EG_MUST_CHECK;

/* Reverse Data1, Data2 and Data3 in place: turns RFC 4122 (big-endian) byte order into .NET
 * order and back. For replaying traffic of clients that wrote RFC order (see the vectors README);
 * not needed to speak the protocol. */
void eg_psrp_guid_swap_order(struct eg_psrp_guid *g);

bool eg_psrp_guid_is_nil(const struct eg_psrp_guid *g);
bool eg_psrp_guid_equal(const struct eg_psrp_guid *a, const struct eg_psrp_guid *b);

/* ---- message types ---- */

enum eg_psrp_destination {
    EG_PSRP_DEST_CLIENT = 1,
    EG_PSRP_DEST_SERVER = 2,
};

/* Every MessageType of MS-PSRP 2.2.1 (psrp-wire.md section 8). Direction in the comments. */
enum eg_psrp_msg_type {
    EG_PSRP_SESSION_CAPABILITY = 0x00010002,         /* both */
    EG_PSRP_INIT_RUNSPACEPOOL = 0x00010004,          /* C->S */
    EG_PSRP_PUBLIC_KEY = 0x00010005,                 /* C->S */
    EG_PSRP_ENCRYPTED_SESSION_KEY = 0x00010006,      /* S->C */
    EG_PSRP_PUBLIC_KEY_REQUEST = 0x00010007,         /* S->C */
    EG_PSRP_CONNECT_RUNSPACEPOOL = 0x00010008,       /* C->S */
    EG_PSRP_SET_MAX_RUNSPACES = 0x00021002,          /* C->S */
    EG_PSRP_SET_MIN_RUNSPACES = 0x00021003,          /* C->S */
    EG_PSRP_RUNSPACE_AVAILABILITY = 0x00021004,      /* S->C */
    EG_PSRP_RUNSPACEPOOL_STATE = 0x00021005,         /* S->C */
    EG_PSRP_CREATE_PIPELINE = 0x00021006,            /* C->S */
    EG_PSRP_GET_AVAILABLE_RUNSPACES = 0x00021007,    /* C->S */
    EG_PSRP_USER_EVENT = 0x00021008,                 /* S->C */
    EG_PSRP_APPLICATION_PRIVATE_DATA = 0x00021009,   /* S->C */
    EG_PSRP_GET_COMMAND_METADATA = 0x0002100A,       /* C->S */
    EG_PSRP_RUNSPACEPOOL_INIT_DATA = 0x0002100B,     /* S->C (Connect) */
    EG_PSRP_RESET_RUNSPACE_STATE = 0x0002100C,       /* C->S */
    EG_PSRP_RUNSPACEPOOL_HOST_CALL = 0x00021100,     /* S->C */
    EG_PSRP_RUNSPACEPOOL_HOST_RESPONSE = 0x00021101, /* C->S */
    EG_PSRP_PIPELINE_INPUT = 0x00041002,             /* C->S */
    EG_PSRP_END_OF_PIPELINE_INPUT = 0x00041003,      /* C->S, empty data */
    EG_PSRP_PIPELINE_OUTPUT = 0x00041004,            /* S->C */
    EG_PSRP_ERROR_RECORD = 0x00041005,               /* S->C */
    EG_PSRP_PIPELINE_STATE = 0x00041006,             /* S->C */
    EG_PSRP_DEBUG_RECORD = 0x00041007,               /* S->C */
    EG_PSRP_VERBOSE_RECORD = 0x00041008,             /* S->C */
    EG_PSRP_WARNING_RECORD = 0x00041009,             /* S->C */
    EG_PSRP_PROGRESS_RECORD = 0x00041010,            /* S->C */
    EG_PSRP_INFORMATION_RECORD = 0x00041011,         /* S->C */
    EG_PSRP_PIPELINE_HOST_CALL = 0x00041100,         /* S->C */
    EG_PSRP_PIPELINE_HOST_RESPONSE = 0x00041101,     /* C->S */
};

/* "PIPELINE_OUTPUT" etc. (the MS-PSRP name), or "UNKNOWN". Never NULL, never allocated. */
const char *eg_psrp_msg_type_name(uint32_t type);

/* True for the values of enum eg_psrp_msg_type. */
bool eg_psrp_msg_type_known(uint32_t type);

/* ---- messages ---- */

/* A message. After eg_psrp_message_decode, data points into the decoded buffer (borrowed). */
struct eg_psrp_message {
    uint32_t destination; /* enum eg_psrp_destination; decode keeps whatever arrived */
    uint32_t type;        /* enum eg_psrp_msg_type, or an unknown value */
    struct eg_psrp_guid rpid;
    struct eg_psrp_guid pid;
    const uint8_t *data; /* CLIXML, without the BOM */
    size_t data_len;
    bool had_bom; /* decode: the data started with EF BB BF (stripped); ignored by encode */
};

/* Encode flag: write a UTF-8 BOM before the data (server -> client, for the mock server). A
 * client never sets it. */
#define EG_PSRP_ENCODE_BOM 0x1u

/* Decode the message in buf (len bytes, e.g. one message from eg_psrp_defrag_pop). A leading BOM
 * is stripped from the data and reported in had_bom; the data is not otherwise looked at.
 * Destination and type are not checked (callers compare them with what they expect).
 * Returns 0 or EG_EPARSE (fewer than 40 bytes). */
int eg_psrp_message_decode(const uint8_t *buf, size_t len,
                           struct eg_psrp_message *ret) EG_MUST_CHECK;

/* Bytes that encoding m with flags produces: 40 + (3 with EG_PSRP_ENCODE_BOM) + data_len. */
size_t eg_psrp_message_encoded_len(const struct eg_psrp_message *m, unsigned flags);

/* Encode m into out (cap bytes); *ret_len (may be NULL) gets the length. The data must not start
 * with a BOM of its own (pass the flag instead). Returns 0, EG_EINVAL (destination not 1 or 2,
 * data NULL with data_len > 0, data starting with a BOM, unknown flag), EG_ELIMIT (over
 * EG_PSRP_MAX_MESSAGE, or cap too small). */
int eg_psrp_message_encode_to(const struct eg_psrp_message *m, unsigned flags, uint8_t *out,
                              size_t cap, size_t *ret_len) EG_MUST_CHECK;

/* Same, into a new buffer the caller frees with eg_free. Also EG_ENOMEM. */
int eg_psrp_message_encode(const struct eg_psrp_message *m, unsigned flags, uint8_t **ret,
                           size_t *ret_len) EG_MUST_CHECK;

/* Encode m and cut it into fragments (eg_psrp_fragment_message: max_fragment_size > 21, ObjectId
 * from *next_object_id, incremented on success). *ret: free with eg_psrp_fragments_free.
 * Returns what those two return. */
int eg_psrp_message_fragment(const struct eg_psrp_message *m, unsigned flags,
                             size_t max_fragment_size, uint64_t *next_object_id,
                             struct eg_psrp_fragments **ret) EG_MUST_CHECK;

#endif

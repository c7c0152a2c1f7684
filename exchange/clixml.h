/* clixml.h - CLIXML (MS-PSRP 2.2.5): PowerShell's object serialization, as carried in the data of
 * every PSRP message and in Export-Clixml / "#< CLIXML" streams.
 *
 * Three parts:
 *  - an object model: struct eg_ps_value, one node per primitive (S, I32, DT, ...) or complex
 *    object (<Obj>: type names, ToString, an optional extended-primitive base value, a container
 *    LST/IE/STK/QUE/DCT, adapted <Props> and extended <MS> members). Values are reference
 *    counted: a <Ref> to an earlier <Obj> shares that node (its count goes up), and a <TNRef>
 *    shares the type-name list. Treat every struct below as read-only; change values only through
 *    the eg_ps_* functions. Values are not thread-safe (the count is not atomic): hand a tree to
 *    another thread only as a whole.
 *  - a decoder: eg_clixml_decode() for the data of ONE PSRP message (a single bare element), and a
 *    push-style streaming decoder (eg_clixml_stream_*) for <Objs> documents and long concatenated
 *    outputs, which hands each complete top-level object to a callback and then frees it, so memory
 *    stays bounded whatever the length of the stream.
 *  - an encoder: eg_clixml_encode() writes one value as message data (no BOM), with Obj and TN
 *    RefIds numbered from 0 in the message, <TNRef> for a type list written before, <Ref> for an
 *    object node written before. Output is a pure function of the value.
 *
 * Strings are UTF-8 with an explicit length and a NUL after the last byte (a decoded string may
 * itself contain U+0000, from "_x0000_"). Escaping follows pwsh (doc: docs/internals/clixml.md).
 * Limits come from common/limits.h (EG_CLIXML_*); over a limit is EG_ELIMIT, malformed input is
 * EG_EPARSE, never a crash. Library code: nothing here logs.
 */
#ifndef EG_CLIXML_H
#define EG_CLIXML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* ---- object model ---- */

/* One kind per CLIXML element that is a value. The comment is the element tag. */
enum eg_ps_kind {
    EG_PS_NIL = 0, /* Nil: $null */
    EG_PS_S,       /* S: string */
    EG_PS_C,       /* C: char, one UTF-16 unit as UInt16 decimal (u.u) */
    EG_PS_B,       /* B: bool (u.b) */
    EG_PS_DT,      /* DT: DateTime (text + u.dt) */
    EG_PS_BY,      /* By: byte, UInt8 (u.u) */
    EG_PS_SB,      /* SB: sbyte, Int8 (u.i) */
    EG_PS_U16,     /* U16 (u.u) */
    EG_PS_I16,     /* I16 (u.i) */
    EG_PS_U32,     /* U32 (u.u) */
    EG_PS_I32,     /* I32 (u.i) */
    EG_PS_U64,     /* U64 (u.u) */
    EG_PS_I64,     /* I64 (u.i) */
    EG_PS_SG,      /* Sg: float (u.d holds the float's value) */
    EG_PS_DB,      /* Db: double (u.d) */
    EG_PS_D,       /* D: decimal, kept as its text (validated) */
    EG_PS_G,       /* G: Guid (u.guid) */
    EG_PS_URI,     /* URI: string */
    EG_PS_VERSION, /* Version: text + u.version */
    EG_PS_XD,      /* XD: XML document, kept as a string (not parsed) */
    EG_PS_SBK,     /* SBK: script block, kept as a string */
    EG_PS_BA,      /* BA: byte[] (text holds the decoded bytes) */
    EG_PS_SS,      /* SS: SecureString, text: the base64 ciphertext (checked, not decrypted) */
    EG_PS_TS,      /* TS: TimeSpan (text + u.ticks) */
    EG_PS_PR,      /* PR: ProgressRecord (u.pr) */
    EG_PS_OBJ,     /* Obj: complex object (u.obj) */
    EG__PS_KIND_COUNT
};

enum eg_ps_container {
    EG_PS_CT_NONE = 0,
    EG_PS_CT_LST, /* list (ArrayList, arrays, List<T>, MultiValuedProperty) */
    EG_PS_CT_IE,  /* other enumerable */
    EG_PS_CT_STK, /* stack, items in wire order */
    EG_PS_CT_QUE, /* queue */
    EG_PS_CT_DCT  /* dictionary (Hashtable): entries */
};

/* Time zone part of a DT. */
enum eg_ps_tz {
    EG_PS_TZ_UNSPECIFIED = 0, /* no offset on the wire: u.dt.ms reads the wall clock as UTC */
    EG_PS_TZ_UTC,             /* "Z" */
    EG_PS_TZ_OFFSET           /* "+hh:mm" / "-hh:mm" (u.dt.offset_min) */
};

struct eg_ps_str {
    char *s;    /* NUL-terminated; never NULL in a value built by this module */
    size_t len; /* bytes before the NUL */
};

/* A type-name list (<TN>), most derived first, as on the wire (no "Deserialized." prefix is added
 * or removed). Shared between objects by reference count. */
struct eg_ps_types {
    unsigned refs;
    size_t n;
    char **names;
};

/* One property (in props) or extended member (in ms): name and value, in wire order. Names are not
 * required to be unique. */
struct eg_ps_member {
    struct eg_ps_str name;
    struct eg_ps_value *value;
};

/* One dictionary entry. The key is never NULL and never Nil. */
struct eg_ps_entry {
    struct eg_ps_value *key;
    struct eg_ps_value *value;
};

struct eg_ps_obj {
    struct eg_ps_types *types; /* NULL: no type names */
    bool has_to_string;
    struct eg_ps_str to_string; /* valid when has_to_string */
    struct eg_ps_value *base;   /* extended primitive / base object (e.g. the I32 of an enum);
                                   NULL if none */
    enum eg_ps_container container;
    struct eg_ps_value **items; /* LST/IE/STK/QUE */
    size_t n_items, cap_items;
    struct eg_ps_entry *entries; /* DCT */
    size_t n_entries, cap_entries;
    struct eg_ps_member *props; /* <Props>: adapted .NET properties (Exchange objects) */
    size_t n_props, cap_props;
    struct eg_ps_member *ms; /* <MS>: extended / note properties (PSCustomObject, PSRP bodies) */
    size_t n_ms, cap_ms;
    bool member_set; /* this object stands for a nested <MS N="..."> (members in ms only) */
};

/* A ProgressRecord (<PR>, MS-PSRP 2.2.5.1.25). */
struct eg_ps_progress {
    struct eg_ps_str activity;             /* <AV> */
    int32_t activity_id;                   /* <AI> */
    struct eg_ps_value *current_operation; /* the value after AI; never NULL (Nil if none) */
    int32_t parent_activity_id;            /* <PI> */
    int32_t percent_complete;              /* <PC> */
    struct eg_ps_str record_type;          /* <T>: "Processing" / "Completed" */
    int32_t seconds_remaining;             /* <SR> */
    struct eg_ps_str status_description;   /* <SD> */
};

struct eg_ps_value {
    enum eg_ps_kind kind;
    unsigned refs; /* reference count: eg_ps_value_ref / eg_ps_value_free */
    /* S URI XD SBK: the (unescaped) string. SS: base64 text. D DT TS Version: the element text
     * (XML white space trimmed). BA: the bytes. Empty ("" / len 0) for other kinds. */
    struct eg_ps_str text;
    union {
        bool b;           /* B */
        int64_t i;        /* SB I16 I32 I64 */
        uint64_t u;       /* By U16 U32 U64 C */
        double d;         /* Sg Db */
        uint8_t guid[16]; /* G, in text order: "00112233-4455-..." is 00 11 22 33 44 55 ... */
        struct {
            int64_t ms;         /* milliseconds since 1970-01-01T00:00:00Z (fraction truncated) */
            int32_t offset_min; /* EG_PS_TZ_OFFSET: minutes east of UTC */
            enum eg_ps_tz tz;
        } dt;                      /* DT */
        int64_t ticks;             /* TS: 100-nanosecond ticks (sign included) */
        int32_t version[4];        /* Version: major, minor, build, revision; -1 when absent */
        struct eg_ps_obj *obj;     /* OBJ */
        struct eg_ps_progress *pr; /* PR */
    } u;
};

/* The element tag of a kind ("S", "I32", "Obj", "Nil", "PR"), or "?" for an invalid value. */
const char *eg_ps_kind_tag(enum eg_ps_kind kind);

/* ---- constructors: each returns a new value with one reference (free with eg_ps_value_free),
 * or NULL when out of memory. ---- */

struct eg_ps_value *eg_ps_new_nil(void);
struct eg_ps_value *eg_ps_new_bool(bool b);
struct eg_ps_value *eg_ps_new_i8(int8_t v); /* SB */
struct eg_ps_value *eg_ps_new_i16(int16_t v);
struct eg_ps_value *eg_ps_new_i32(int32_t v);
struct eg_ps_value *eg_ps_new_i64(int64_t v);
struct eg_ps_value *eg_ps_new_u8(uint8_t v); /* By */
struct eg_ps_value *eg_ps_new_u16(uint16_t v);
struct eg_ps_value *eg_ps_new_u32(uint32_t v);
struct eg_ps_value *eg_ps_new_u64(uint64_t v);
struct eg_ps_value *eg_ps_new_char(uint16_t utf16_unit); /* C */
struct eg_ps_value *eg_ps_new_float(float v);            /* Sg */
struct eg_ps_value *eg_ps_new_double(double v);          /* Db */
/* S from a NUL-terminated string (eg_ps_new_stringn: len bytes, may contain NUL). The bytes are
 * copied as they are; eg_clixml_encode rejects invalid UTF-8 with EG_EINVAL. NULL s is "". */
struct eg_ps_value *eg_ps_new_string(const char *s);
struct eg_ps_value *eg_ps_new_stringn(const char *s, size_t len);
struct eg_ps_value *eg_ps_new_bytes(const void *data, size_t len); /* BA */
struct eg_ps_value *eg_ps_new_guid(const uint8_t guid[16]);        /* G, text order */
/* DT in UTC ("2022-10-31T01:01:36.5Z"); ms since the Unix epoch, years 0001..9999 (out of range is
 * clamped to the nearest end). */
struct eg_ps_value *eg_ps_new_datetime(int64_t ms);
/* TS from 100-ns ticks, written like .NET ("PT9.0269026S", "P1DT2H", "PT0S"). */
struct eg_ps_value *eg_ps_new_timespan(int64_t ticks);
/* An empty <Obj> (no type names, no members). */
struct eg_ps_value *eg_ps_new_obj(void);
/* An empty ProgressRecord: strings "", numbers 0, current_operation Nil. */
struct eg_ps_value *eg_ps_new_progress(void);

/* Any primitive kind from its element text, parsed exactly as the decoder parses it (so a decoded
 * and a constructed value compare equal). For S, URI, XD and SBK the text is the string itself,
 * already unescaped, copied as is. For the others XML white space around the text is ignored and
 * the syntax is checked: numbers in range (no hex, optional sign), B "true"/"false"/"1"/"0", G in
 * the D/N/B/P forms, DT xs:dateTime, TS xs:duration, Version 2-4 components, D a decimal within
 * .NET's range, BA and SS base64. Not for Nil, PR, Obj.
 * Returns 0, EG_EINVAL (not a primitive kind), EG_EPARSE (bad text), EG_ENOMEM. */
int eg_ps_new_text(enum eg_ps_kind kind, const char *text, size_t len,
                   struct eg_ps_value **ret) EG_MUST_CHECK;

/* Convenience objects for client messages (NULL when out of memory; strings are copied):
 * an enum:    TN {type_name, System.Enum, System.ValueType, System.Object}, ToString, base I32;
 * a list:     TN {type names given} + empty LST (add items with eg_ps_obj_add_item);
 * a string[]: TN {System.Object[], System.Array, System.Object} + LST of S (as pwsh sends arrays);
 * a hashtable: TN {System.Collections.Hashtable, System.Object} + empty DCT. */
struct eg_ps_value *eg_ps_new_enum(const char *type_name, const char *name, int32_t value);
struct eg_ps_value *eg_ps_new_list(const char *const *type_names, size_t n_types);
struct eg_ps_value *eg_ps_new_string_array(const char *const *items, size_t n);
struct eg_ps_value *eg_ps_new_hashtable(void);

/* Replace a string field of a value (e.g. of a struct eg_ps_progress) with a copy of s[0..len).
 * Returns 0, EG_EINVAL, EG_ENOMEM (the old string is then kept). */
int eg_ps_str_set(struct eg_ps_str *field, const char *s, size_t len) EG_MUST_CHECK;

/* Type-name lists: take a reference (returns t) / drop one (accepts NULL). */
struct eg_ps_types *eg_ps_types_ref(struct eg_ps_types *t);
void eg_ps_types_free(struct eg_ps_types *t);

/* Take one more reference; returns v (NULL stays NULL). */
struct eg_ps_value *eg_ps_value_ref(struct eg_ps_value *v);
/* Drop one reference; the node and what only it references are freed at zero. Accepts NULL.
 * (Values must not form cycles; the decoder never builds one.) */
void eg_ps_value_free(struct eg_ps_value *v);

/* ---- building objects. The *_add / set_base functions take over the reference passed in (also
 * when they fail, the value is then freed), so calls can be nested:
 *     rc = eg_ps_obj_add_ms(o, "N", eg_ps_new_string("Identity"));
 * A NULL value (a failed constructor) gives EG_ENOMEM. obj must be an OBJ, else EG_EINVAL. ---- */

enum eg_ps_section { EG_PS_PROPS, EG_PS_MS };

/* Replace the type names with copies of names[0..n) (n = 0 removes them). */
int eg_ps_obj_set_types(struct eg_ps_value *obj, const char *const *names, size_t n) EG_MUST_CHECK;
/* Share an existing list (takes a reference on it). */
int eg_ps_obj_share_types(struct eg_ps_value *obj, struct eg_ps_types *types) EG_MUST_CHECK;
/* Set ToString to a copy of s[0..len). */
int eg_ps_obj_set_to_string(struct eg_ps_value *obj, const char *s, size_t len) EG_MUST_CHECK;
/* Set (replace) the base value; Nil (or obj itself) is EG_EINVAL. */
int eg_ps_obj_set_base(struct eg_ps_value *obj, struct eg_ps_value *v) EG_MUST_CHECK;
/* Set the container kind. Changing between list kinds keeps the items; changing between a list
 * kind and DCT with items or entries present is EG_ESTATE. */
int eg_ps_obj_set_container(struct eg_ps_value *obj, enum eg_ps_container ct) EG_MUST_CHECK;
/* Append an item (container NONE becomes LST; DCT is EG_ESTATE). */
int eg_ps_obj_add_item(struct eg_ps_value *obj, struct eg_ps_value *v) EG_MUST_CHECK;
/* Append a dictionary entry (container NONE becomes DCT; a list kind is EG_ESTATE). A Nil key is
 * EG_EINVAL (CLIXML cannot carry it). */
int eg_ps_obj_add_entry(struct eg_ps_value *obj, struct eg_ps_value *key,
                        struct eg_ps_value *value) EG_MUST_CHECK;
/* Append a property (EG_PS_PROPS) or extended member (EG_PS_MS) named name[0..name_len). */
int eg_ps_obj_add_named(struct eg_ps_value *obj, enum eg_ps_section section, const char *name,
                        size_t name_len, struct eg_ps_value *v) EG_MUST_CHECK;
/* Same with a NUL-terminated name. */
int eg_ps_obj_add_prop(struct eg_ps_value *obj, const char *name,
                       struct eg_ps_value *v) EG_MUST_CHECK;
int eg_ps_obj_add_ms(struct eg_ps_value *obj, const char *name,
                     struct eg_ps_value *v) EG_MUST_CHECK;

/* ---- reading values. Lookups return borrowed pointers, valid while the tree lives. ---- */

/* The property or member called name (ASCII case-insensitive, as PowerShell resolves names):
 * the first match in Props, then in MS, then (when the base value is itself an Obj) in the base
 * object's. NULL when obj is not an OBJ or has no such member. */
const struct eg_ps_value *eg_ps_obj_prop(const struct eg_ps_value *obj, const char *name);

/* True when v is an OBJ whose type-name list contains type_name, compared exactly after removing
 * a leading "Deserialized." from both sides (so "System.Management.Automation.ErrorRecord" matches
 * a "Deserialized.System.Management.Automation.ErrorRecord" on the wire, and vice versa). */
bool eg_ps_has_type(const struct eg_ps_value *v, const char *type_name);
/* The i-th type name of an OBJ (0 = most derived), or NULL. */
const char *eg_ps_type_name(const struct eg_ps_value *v, size_t i);
/* The ToString of an OBJ if it has one, else the string of an S; NULL otherwise. */
const char *eg_ps_to_string(const struct eg_ps_value *v);

/* Typed getters. An OBJ with a base value (an extended primitive, e.g. an enum's I32, or an
 * <Obj><S>x</S></Obj>) is read through to that base. Returns 0 and writes *ret; EG_ENOTFOUND when
 * v is NULL (e.g. a missing property from eg_ps_obj_prop) or Nil; EG_EINVAL when the kind does not
 * fit. So: rc = eg_ps_get_string(eg_ps_obj_prop(mbx, "Identity"), &s, NULL); */
int eg_ps_get_string(const struct eg_ps_value *v, const char **ret,
                     size_t *ret_len) EG_MUST_CHECK; /* S URI XD SBK; ret_len may be NULL */
int eg_ps_get_bool(const struct eg_ps_value *v, bool *ret) EG_MUST_CHECK;
/* Any integer kind (SB..U64, C) whose value fits; else EG_EINVAL. */
int eg_ps_get_int64(const struct eg_ps_value *v, int64_t *ret) EG_MUST_CHECK;
int eg_ps_get_uint64(const struct eg_ps_value *v, uint64_t *ret) EG_MUST_CHECK;
int eg_ps_get_i32(const struct eg_ps_value *v, int32_t *ret) EG_MUST_CHECK;
int eg_ps_get_double(const struct eg_ps_value *v, double *ret) EG_MUST_CHECK; /* Sg Db */
int eg_ps_get_guid(const struct eg_ps_value *v, uint8_t ret[16]) EG_MUST_CHECK;
int eg_ps_get_datetime(const struct eg_ps_value *v, int64_t *ret_ms) EG_MUST_CHECK;
int eg_ps_get_timespan(const struct eg_ps_value *v, int64_t *ret_ticks) EG_MUST_CHECK;
int eg_ps_get_bytes(const struct eg_ps_value *v, const uint8_t **ret,
                    size_t *ret_len) EG_MUST_CHECK; /* BA */
int eg_ps_get_version(const struct eg_ps_value *v, int32_t ret[4]) EG_MUST_CHECK;

/* Items of an OBJ with a list container (LST/IE/STK/QUE): count (0 otherwise) and the i-th item
 * (NULL past the end). */
size_t eg_ps_list_len(const struct eg_ps_value *v);
const struct eg_ps_value *eg_ps_list_item(const struct eg_ps_value *v, size_t i);
/* The items of a list as strings (for MultiValuedProperty / ProxyAddressCollection / string[]).
 * Every item must be a string (S, or an Obj whose base is one). On success *ret is a new array of
 * *ret_n copies plus a NULL terminator; free it with eg_ps_string_array_free.
 * Returns 0, EG_ENOTFOUND (v NULL or Nil), EG_EINVAL (not a list, or a non-string item),
 * EG_ENOMEM. An empty list gives *ret_n = 0 and a one-element array {NULL}. */
int eg_ps_get_string_array(const struct eg_ps_value *v, char ***ret, size_t *ret_n) EG_MUST_CHECK;
void eg_ps_string_array_free(char **a, size_t n);
/* The value of the DCT entry whose key is a string equal to key (ASCII case-insensitive, like a
 * PowerShell hashtable); NULL if none or v is not a dictionary. */
const struct eg_ps_value *eg_ps_dict_get(const struct eg_ps_value *v, const char *key);

/* Structural equality: same kinds and contents, type names by content, members in order; RefIds
 * and sharing do not matter. Floats compare by bit pattern. NULL equals only NULL. */
bool eg_ps_value_equal(const struct eg_ps_value *a, const struct eg_ps_value *b);

/* Number of value nodes alive in the process (all threads). For tests and diagnostics. */
size_t eg_ps_live_values(void);

/* ---- decoding ---- */

/* Diagnostics of a failed decode: a short English text ("line 3: <I32> text is not a valid
 * number"), never any string content of the input. "" when there is none. */
struct eg_clixml_error {
    char msg[160];
};

/* Decode the data of one PSRP message: exactly one bare element (<Obj>, <S>, ...), optionally
 * preceded by a UTF-8 BOM and white space (an XML declaration, UTF-8 only, is also accepted).
 * Obj and TN RefIds are scoped to this call. No DTD, no external or custom entities, no network.
 * On success *ret is the value (free with eg_ps_value_free).
 * Returns 0, EG_EINVAL (NULL arguments), EG_EPARSE (not well-formed XML, unknown element where a
 * value is required, bad primitive text, Ref to an unknown RefId, <Objs> root, zero or several
 * elements, ...), EG_ELIMIT (len > EG_CLIXML_MAX_MESSAGE_BYTES or another EG_CLIXML_* limit),
 * EG_ENOMEM. err (may be NULL) gets a diagnostic on failure. */
int eg_clixml_decode(const void *data, size_t len, struct eg_ps_value **ret,
                     struct eg_clixml_error *err) EG_MUST_CHECK;

/* Streaming decoder. Input: any number of top-level values, each either a bare element (one PSRP
 * message's data after another; a BOM between them is ignored) or inside <Objs> roots (the
 * Export-Clixml form; a leading "#< CLIXML" line, BOM and UTF-8 XML declaration are skipped).
 *
 * For each complete top-level value the callback is called with the element's S attribute (the
 * stream name, "Error", "progress" ...; NULL when absent) and the value, borrowed: it is freed when
 * the callback returns unless the callback keeps it with eg_ps_value_ref(). Return 0 to go on or a
 * negative EG_E* code to stop: that code is then returned by the feed/finish call that was running.
 * The callback must not call the stream's own functions.
 *
 * RefId scope: for bare elements both counters restart with each top-level element (one message
 * each). Inside <Objs> the TN list table lasts for the document, but objects are forgotten after
 * each top-level object, so a <Ref> to an earlier top-level object is EG_EPARSE (the price of
 * bounded memory). Limits apply per top-level value (EG_CLIXML_MAX_MESSAGE_BYTES of input, values,
 * objects). */
struct eg_clixml_stream;

typedef int (*eg_clixml_cb)(void *userdata, const char *stream, struct eg_ps_value *value);

/* New decoder. cb must not be NULL. Returns 0, EG_EINVAL, EG_ENOMEM. */
int eg_clixml_stream_new(eg_clixml_cb cb, void *userdata,
                         struct eg_clixml_stream **ret) EG_MUST_CHECK;
/* Feed len bytes (any split, down to one byte at a time). Callbacks run from inside this call.
 * Returns 0, the callback's code, EG_EPARSE, EG_ELIMIT, EG_ENOMEM; after an error the stream is
 * dead and every later call returns the same code. EG_ESTATE after finish. */
int eg_clixml_stream_feed(struct eg_clixml_stream *s, const void *data, size_t len) EG_MUST_CHECK;
/* End of input: delivers what is still pending and checks that nothing is left open (a truncated
 * stream is EG_EPARSE). An empty stream is fine (zero values). Same codes as feed. */
int eg_clixml_stream_finish(struct eg_clixml_stream *s) EG_MUST_CHECK;
/* Diagnostic of the error that killed the stream ("" if none). Never NULL. */
const char *eg_clixml_stream_errmsg(const struct eg_clixml_stream *s);
/* Number of top-level values delivered so far. */
size_t eg_clixml_stream_count(const struct eg_clixml_stream *s);
/* Free the decoder (accepts NULL). Values the callback kept stay valid. */
void eg_clixml_stream_free(struct eg_clixml_stream *s);

/* ---- encoding ---- */

/* Serialize v as the data of one PSRP message (no BOM, no XML declaration). On success *ret is a
 * NUL-terminated string the caller frees with eg_free and *ret_len (may be NULL) its length.
 * Returns 0, EG_EINVAL (NULL, invalid UTF-8 in any string or name, a value of an invalid kind, a
 * Nil dictionary key), EG_ELIMIT (deeper than EG_CLIXML_MAX_DEPTH or longer than
 * EG_CLIXML_MAX_MESSAGE_BYTES), EG_ENOMEM. */
int eg_clixml_encode(const struct eg_ps_value *v, char **ret, size_t *ret_len) EG_MUST_CHECK;

/* ---- string escaping (MS-PSRP 2.2.5.1.1, as pwsh does it) ---- */

/* Flags of eg_clixml_escape: also apply XML escaping for element text (& < >) or for an attribute
 * value in double quotes (& < > "). Without a flag only the _xHHHH_ rules are applied. */
#define EG_CLIXML_ESC_TEXT 0x1u
#define EG_CLIXML_ESC_ATTR 0x2u

/* Escape the UTF-8 string s[0..len): "_" followed by "x" or "X" becomes "_x005F_"; UTF-16 units
 * U+0000-001F, U+007F-009F, each half of a non-BMP character, and the non-characters U+FFFE/U+FFFF
 * (not allowed in XML) become "_xHHHH_" (upper-case hex); everything else is copied.
 * On success *ret is a new NUL-terminated string (eg_free) and *ret_len (may be NULL) its length.
 * Returns 0, EG_EINVAL (invalid UTF-8, NULL), EG_ELIMIT (result would not fit), EG_ENOMEM. */
int eg_clixml_escape(const char *s, size_t len, unsigned flags, char **ret,
                     size_t *ret_len) EG_MUST_CHECK;

/* Undo the escaping, like .NET XmlConvert.DecodeName (what pwsh uses): every "_xHHHH_" or
 * "_XHHHH_" (any hex case) becomes that UTF-16 unit, "_xHHHHHHHH_" that code point (left as is
 * above U+10FFFF); surrogate pairs are joined and the result is UTF-8. An unpaired surrogate
 * becomes U+FFFD. Non-escaped text is copied (it must be valid UTF-8, else EG_EINVAL). The result
 * is never longer than the input and may contain NUL bytes.
 * Returns 0, EG_EINVAL, EG_ENOMEM. */
int eg_clixml_unescape(const char *s, size_t len, char **ret, size_t *ret_len) EG_MUST_CHECK;

#endif

/* psrp_message.c - MS-PSRP message header codec, message type names and GUIDs
 * (see psrp_message.h). */
#include "exchange/psrp_message.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/limits.h"

static const uint8_t bom[3] = {0xEF, 0xBB, 0xBF};

/* ---- GUIDs ---- */

/* Position in the 16 wire bytes of each of the 16 bytes of the canonical text form, read left
 * to right: Data1 (u32 LE), Data2 (u16 LE), Data3 (u16 LE) reversed, Data4 as is. */
static const uint8_t text_order[16] = {3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};

char *eg_psrp_guid_to_string(const struct eg_psrp_guid *g, bool upper,
                             char out[EG_PSRP_GUID_STRLEN])
{
    const char *hex = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        uint8_t v = g->b[text_order[i]];
        out[o++] = hex[v >> 4];
        out[o++] = hex[v & 15];
    }
    out[o] = '\0';
    return out;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int eg_psrp_guid_from_string(const char *s, struct eg_psrp_guid *ret)
{
    if (!s)
        return EG_EPARSE;
    size_t len = strlen(s);
    if (len == 38 && s[0] == '{' && s[37] == '}') {
        s++;
        len = 36;
    }
    if (len != 36)
        return EG_EPARSE;
    struct eg_psrp_guid g;
    size_t pos = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            if (s[pos] != '-')
                return EG_EPARSE;
            pos++;
        }
        int hi = hexval(s[pos]), lo = hexval(s[pos + 1]);
        if (hi < 0 || lo < 0)
            return EG_EPARSE;
        g.b[text_order[i]] = (uint8_t)(hi << 4 | lo);
        pos += 2;
    }
    *ret = g;
    return 0;
}

/* Fill buf with n random bytes: getrandom(), or /dev/urandom where the syscall is missing. */
static int random_bytes(uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(buf + got, n - got, 0);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == ENOSYS)
            break;
        return EG_EIO;
    }
    if (got == n)
        return 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return EG_EIO;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        close(fd);
        return EG_EIO;
    }
    close(fd);
    return 0;
}

int eg_psrp_guid_generate(struct eg_psrp_guid *ret)
{
    struct eg_psrp_guid g;
    int r = random_bytes(g.b, sizeof g.b);
    if (r < 0)
        return r;
    /* Version nibble: the top of Data3, which is u16 LE at bytes 6-7, so the top of byte 7. */
    g.b[7] = (uint8_t)((g.b[7] & 0x0F) | 0x40);
    /* Variant 10xx: the top of Data4[0]. */
    g.b[8] = (uint8_t)((g.b[8] & 0x3F) | 0x80);
    *ret = g;
    return 0;
}

void eg_psrp_guid_swap_order(struct eg_psrp_guid *g)
{
    uint8_t t;
    t = g->b[0], g->b[0] = g->b[3], g->b[3] = t;
    t = g->b[1], g->b[1] = g->b[2], g->b[2] = t;
    t = g->b[4], g->b[4] = g->b[5], g->b[5] = t;
    t = g->b[6], g->b[6] = g->b[7], g->b[7] = t;
}

bool eg_psrp_guid_is_nil(const struct eg_psrp_guid *g)
{
    for (int i = 0; i < 16; i++)
        if (g->b[i])
            return false;
    return true;
}

bool eg_psrp_guid_equal(const struct eg_psrp_guid *a, const struct eg_psrp_guid *b)
{
    return memcmp(a->b, b->b, sizeof a->b) == 0;
}

/* ---- message types ---- */

static const struct {
    uint32_t type;
    const char *name;
} type_names[] = {
    {EG_PSRP_SESSION_CAPABILITY, "SESSION_CAPABILITY"},
    {EG_PSRP_INIT_RUNSPACEPOOL, "INIT_RUNSPACEPOOL"},
    {EG_PSRP_PUBLIC_KEY, "PUBLIC_KEY"},
    {EG_PSRP_ENCRYPTED_SESSION_KEY, "ENCRYPTED_SESSION_KEY"},
    {EG_PSRP_PUBLIC_KEY_REQUEST, "PUBLIC_KEY_REQUEST"},
    {EG_PSRP_CONNECT_RUNSPACEPOOL, "CONNECT_RUNSPACEPOOL"},
    {EG_PSRP_SET_MAX_RUNSPACES, "SET_MAX_RUNSPACES"},
    {EG_PSRP_SET_MIN_RUNSPACES, "SET_MIN_RUNSPACES"},
    {EG_PSRP_RUNSPACE_AVAILABILITY, "RUNSPACE_AVAILABILITY"},
    {EG_PSRP_RUNSPACEPOOL_STATE, "RUNSPACEPOOL_STATE"},
    {EG_PSRP_CREATE_PIPELINE, "CREATE_PIPELINE"},
    {EG_PSRP_GET_AVAILABLE_RUNSPACES, "GET_AVAILABLE_RUNSPACES"},
    {EG_PSRP_USER_EVENT, "USER_EVENT"},
    {EG_PSRP_APPLICATION_PRIVATE_DATA, "APPLICATION_PRIVATE_DATA"},
    {EG_PSRP_GET_COMMAND_METADATA, "GET_COMMAND_METADATA"},
    {EG_PSRP_RUNSPACEPOOL_INIT_DATA, "RUNSPACEPOOL_INIT_DATA"},
    {EG_PSRP_RESET_RUNSPACE_STATE, "RESET_RUNSPACE_STATE"},
    {EG_PSRP_RUNSPACEPOOL_HOST_CALL, "RUNSPACEPOOL_HOST_CALL"},
    {EG_PSRP_RUNSPACEPOOL_HOST_RESPONSE, "RUNSPACEPOOL_HOST_RESPONSE"},
    {EG_PSRP_PIPELINE_INPUT, "PIPELINE_INPUT"},
    {EG_PSRP_END_OF_PIPELINE_INPUT, "END_OF_PIPELINE_INPUT"},
    {EG_PSRP_PIPELINE_OUTPUT, "PIPELINE_OUTPUT"},
    {EG_PSRP_ERROR_RECORD, "ERROR_RECORD"},
    {EG_PSRP_PIPELINE_STATE, "PIPELINE_STATE"},
    {EG_PSRP_DEBUG_RECORD, "DEBUG_RECORD"},
    {EG_PSRP_VERBOSE_RECORD, "VERBOSE_RECORD"},
    {EG_PSRP_WARNING_RECORD, "WARNING_RECORD"},
    {EG_PSRP_PROGRESS_RECORD, "PROGRESS_RECORD"},
    {EG_PSRP_INFORMATION_RECORD, "INFORMATION_RECORD"},
    {EG_PSRP_PIPELINE_HOST_CALL, "PIPELINE_HOST_CALL"},
    {EG_PSRP_PIPELINE_HOST_RESPONSE, "PIPELINE_HOST_RESPONSE"},
};

static const char *lookup_type(uint32_t type)
{
    for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++)
        if (type_names[i].type == type)
            return type_names[i].name;
    return NULL;
}

const char *eg_psrp_msg_type_name(uint32_t type)
{
    const char *n = lookup_type(type);
    return n ? n : "UNKNOWN";
}

bool eg_psrp_msg_type_known(uint32_t type)
{
    return lookup_type(type) != NULL;
}

/* ---- messages ---- */

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

int eg_psrp_message_decode(const uint8_t *buf, size_t len, struct eg_psrp_message *ret)
{
    if (!buf || len < EG_PSRP_MESSAGE_HEADER_LEN)
        return EG_EPARSE;
    struct eg_psrp_message m = {
        .destination = get_le32(buf),
        .type = get_le32(buf + 4),
        .data = buf + EG_PSRP_MESSAGE_HEADER_LEN,
        .data_len = len - EG_PSRP_MESSAGE_HEADER_LEN,
    };
    memcpy(m.rpid.b, buf + 8, 16);
    memcpy(m.pid.b, buf + 24, 16);
    if (m.data_len >= sizeof bom && memcmp(m.data, bom, sizeof bom) == 0) {
        m.had_bom = true;
        m.data += sizeof bom;
        m.data_len -= sizeof bom;
    }
    *ret = m;
    return 0;
}

size_t eg_psrp_message_encoded_len(const struct eg_psrp_message *m, unsigned flags)
{
    size_t extra = EG_PSRP_MESSAGE_HEADER_LEN + ((flags & EG_PSRP_ENCODE_BOM) ? sizeof bom : 0);
    return m->data_len > SIZE_MAX - extra ? SIZE_MAX : m->data_len + extra;
}

int eg_psrp_message_encode_to(const struct eg_psrp_message *m, unsigned flags, uint8_t *out,
                              size_t cap, size_t *ret_len)
{
    if (flags & ~EG_PSRP_ENCODE_BOM)
        return EG_EINVAL;
    if (m->destination != EG_PSRP_DEST_CLIENT && m->destination != EG_PSRP_DEST_SERVER)
        return EG_EINVAL;
    if (!m->data && m->data_len)
        return EG_EINVAL;
    if (m->data_len >= sizeof bom && memcmp(m->data, bom, sizeof bom) == 0)
        return EG_EINVAL;
    size_t need = eg_psrp_message_encoded_len(m, flags);
    if (need > EG_PSRP_MAX_MESSAGE || cap < need)
        return EG_ELIMIT;
    put_le32(out, m->destination);
    put_le32(out + 4, m->type);
    memcpy(out + 8, m->rpid.b, 16);
    memcpy(out + 24, m->pid.b, 16);
    size_t o = EG_PSRP_MESSAGE_HEADER_LEN;
    if (flags & EG_PSRP_ENCODE_BOM) {
        memcpy(out + o, bom, sizeof bom);
        o += sizeof bom;
    }
    if (m->data_len)
        memcpy(out + o, m->data, m->data_len);
    if (ret_len)
        *ret_len = need;
    return 0;
}

int eg_psrp_message_encode(const struct eg_psrp_message *m, unsigned flags, uint8_t **ret,
                           size_t *ret_len)
{
    size_t need = eg_psrp_message_encoded_len(m, flags);
    if (need > EG_PSRP_MAX_MESSAGE)
        return EG_ELIMIT;
    uint8_t *buf = eg_malloc(need);
    if (!buf)
        return EG_ENOMEM;
    size_t n = 0;
    int r = eg_psrp_message_encode_to(m, flags, buf, need, &n);
    if (r < 0) {
        eg_free(buf);
        return r;
    }
    *ret = buf;
    if (ret_len)
        *ret_len = n;
    return 0;
}

int eg_psrp_message_fragment(const struct eg_psrp_message *m, unsigned flags,
                             size_t max_fragment_size, uint64_t *next_object_id,
                             struct eg_psrp_fragments **ret)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int r = eg_psrp_message_encode(m, flags, &buf, &len);
    if (r < 0)
        goto out;
    r = eg_psrp_fragment_message(buf, len, max_fragment_size, next_object_id, ret);
out:
    eg_free(buf);
    return r;
}

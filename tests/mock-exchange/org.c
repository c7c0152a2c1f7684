/* org.c - the mock Exchange org: mailboxes and partnerships in compact form, deterministic
 * seeding, the identity forms of exchange-semantics §3, the access-state precedence of §10.3, the
 * wipe state machine of §8.1 and the simulated device sync that drives it. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/limits.h"
#include "common/util.h"
#include "mx_internal.h"

/* Seeded times are relative to this instant (2025-06-01T00:00:00Z), so seeding is deterministic. */
#define MX_BASE_MS INT64_C(1748736000000)
#define MX_DAY_MS  INT64_C(86400000)

/* ---------------------------------------------------------------- names */

static const char *const state_names[] = {"Unknown", "Allowed", "Blocked", "Quarantined",
                                          "DeviceDiscovery"};
static const char *const reason_names[] = {"Unknown",    "Global",  "Individual",
                                           "DeviceRule", "Upgrade", "Policy"};
static const char *const level_names[] = {"Allow", "Block", "Quarantine"};
static const char *const charac_names[] = {"DeviceType", "DeviceModel", "DeviceOS", "UserAgent",
                                           "XMSWLHeader"};

const char *mx_state_name(unsigned s)
{
    return s < 5 ? state_names[s] : "Unknown";
}
const char *mx_reason_name(unsigned r)
{
    return r < 6 ? reason_names[r] : "Unknown";
}
const char *mx_level_name(unsigned l)
{
    return l < 3 ? level_names[l] : "Allow";
}
const char *mx_charac_name(unsigned c)
{
    return c < 5 ? charac_names[c] : "DeviceType";
}

int mx_profile_parse(const char *s, enum mx_profile *ret)
{
    if (!s || !ret)
        return EG_EINVAL;
    if (strcmp(s, "2010") == 0)
        *ret = MX_PROFILE_2010;
    else if (strcmp(s, "2013") == 0)
        *ret = MX_PROFILE_2013;
    else if (strcmp(s, "2016") == 0 || strcmp(s, "2019") == 0 || strcasecmp(s, "se") == 0)
        *ret = MX_PROFILE_2016;
    else if (strcasecmp(s, "online") == 0)
        *ret = MX_PROFILE_ONLINE;
    else
        return EG_EINVAL;
    return 0;
}

const char *mx_profile_name(enum mx_profile p)
{
    switch (p) {
    case MX_PROFILE_2010:
        return "2010";
    case MX_PROFILE_2013:
        return "2013";
    case MX_PROFILE_2016:
        return "2016";
    case MX_PROFILE_ONLINE:
        return "online";
    }
    return "?";
}

/* ---------------------------------------------------------------- small helpers */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* A bijection of 64-bit values (the splitmix finalizer): distinct inputs, distinct outputs. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

uint64_t mx_rand(struct mx_org *org)
{
    return splitmix(&org->rng);
}

void mx_rand_guid(uint64_t *state, uint8_t g[16])
{
    uint64_t a = splitmix(state), b = splitmix(state);
    for (int i = 0; i < 8; i++) {
        g[i] = (uint8_t)(a >> (56 - 8 * i));
        g[8 + i] = (uint8_t)(b >> (56 - 8 * i));
    }
    g[6] = (uint8_t)((g[6] & 0x0F) | 0x40); /* version 4 */
    g[8] = (uint8_t)((g[8] & 0x3F) | 0x80); /* RFC 4122 variant */
}

void mx_guid_text(const uint8_t g[16], char out[40])
{
    snprintf(out, 40, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", g[0],
             g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10], g[11], g[12], g[13],
             g[14], g[15]);
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

bool mx_guid_parse(const char *s, uint8_t out[16])
{
    char hex[32];
    size_t n = 0, len = strlen(s);
    const char *p = s;
    bool dashed;

    if (len == 38 && ((s[0] == '{' && s[37] == '}') || (s[0] == '(' && s[37] == ')'))) {
        p = s + 1;
        len = 36;
    }
    if (len == 36)
        dashed = true;
    else if (len == 32)
        dashed = false;
    else
        return false;
    for (size_t i = 0; i < len; i++) {
        if (dashed && (i == 8 || i == 13 || i == 18 || i == 23)) {
            if (p[i] != '-')
                return false;
            continue;
        }
        if (hexval(p[i]) < 0)
            return false;
        hex[n++] = p[i];
    }
    if (n != 32)
        return false;
    for (int i = 0; i < 16; i++)
        out[i] = (uint8_t)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
    return true;
}

static uint64_t hash_lower(const char *s)
{
    uint64_t h = UINT64_C(1469598103934665603);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        h = (h ^ c) * UINT64_C(1099511628211);
    }
    return h ? h : 1;
}

static uint64_t hash_exact(const char *s)
{
    uint64_t h = UINT64_C(1469598103934665603);
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * UINT64_C(1099511628211);
    return h;
}

int64_t mx_now(struct mx_org *org)
{
    return org->clock_ms > 0 ? org->clock_ms : eg_now_ms();
}

bool mx_wildcard(const char *p, const char *s)
{
    const char *star = NULL, *ss = NULL;
    while (*s) {
        char a = *p, b = *s;
        if (a >= 'A' && a <= 'Z')
            a = (char)(a - 'A' + 'a');
        if (b >= 'A' && b <= 'Z')
            b = (char)(b - 'A' + 'a');
        if (*p == '*') {
            star = p++;
            ss = s;
        } else if (*p == '?' || (*p && a == b)) {
            p++;
            s++;
        } else if (star) {
            p = star + 1;
            s = ++ss;
        } else {
            return false;
        }
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}

/* ---------------------------------------------------------------- string lists */

int mx_strv_add(struct mx_strv *sv, const char *s)
{
    if (sv->n == sv->cap) {
        size_t nc = sv->cap ? sv->cap * 2 : 4;
        char **nv = eg_reallocarray(sv->v, nc, sizeof *nv);
        if (!nv)
            return EG_ENOMEM;
        sv->v = nv;
        sv->cap = nc;
    }
    char *d = eg_strdup(s);
    if (!d)
        return EG_ENOMEM;
    sv->v[sv->n++] = d;
    return 0;
}

void mx_strv_clear(struct mx_strv *sv)
{
    for (size_t i = 0; i < sv->n; i++)
        eg_free(sv->v[i]);
    eg_free(sv->v);
    sv->v = NULL;
    sv->n = sv->cap = 0;
}

long mx_strv_find(const struct mx_strv *sv, const char *s)
{
    for (size_t i = 0; i < sv->n; i++)
        if (strcasecmp(sv->v[i], s) == 0)
            return (long)i;
    return -1;
}

void mx_strv_remove_at(struct mx_strv *sv, size_t i)
{
    if (i >= sv->n)
        return;
    eg_free(sv->v[i]);
    memmove(&sv->v[i], &sv->v[i + 1], (sv->n - i - 1) * sizeof *sv->v);
    sv->n--;
}

/* ---------------------------------------------------------------- arena and interning */

struct mx_arena {
    struct mx_arena *next;
    size_t used, cap;
    char data[];
};

#define MX_ARENA_CHUNK (256 * 1024)

/* n bytes from the arena, aligned to align (1 for strings, alignof a pointer for arrays). */
static char *arena_alloc_aligned(struct mx_org *org, size_t n, size_t align)
{
    struct mx_arena *a = org->arena;
    size_t pad = a ? (align - (a->used & (align - 1))) & (align - 1) : 0;
    if (!a || a->cap - a->used < n + pad) {
        size_t cap = n > MX_ARENA_CHUNK ? n : MX_ARENA_CHUNK;
        struct mx_arena *na = eg_malloc(sizeof *na + cap);
        if (!na)
            return NULL;
        na->next = a;
        na->used = 0;
        na->cap = cap;
        org->arena = na;
        org->arena_bytes += sizeof *na + cap;
        a = na;
        pad = 0;
    }
    char *p = a->data + a->used + pad;
    a->used += pad + n;
    return p;
}

static char *arena_alloc(struct mx_org *org, size_t n)
{
    return arena_alloc_aligned(org, n, 1);
}

/* An array of n string pointers in the arena. */
static const char **arena_ptrs(struct mx_org *org, size_t n)
{
    return (const char **)(void *)arena_alloc_aligned(org, n * sizeof(char *),
                                                      _Alignof(const char *));
}

static const char *arena_strdup(struct mx_org *org, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = arena_alloc(org, n);
    if (p)
        memcpy(p, s, n);
    return p;
}

static const char *arena_printf(struct mx_org *org, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static const char *arena_printf(struct mx_org *org, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf)
        return NULL;
    return arena_strdup(org, buf);
}

const char *mx_intern(struct mx_org *org, const char *s)
{
    if (!s)
        return NULL;
    if (org->intern_n * 2 >= org->intern_cap) {
        size_t nc = org->intern_cap ? org->intern_cap * 2 : 256;
        const char **nt = eg_calloc(nc, sizeof *nt);
        if (!nt)
            return NULL;
        for (size_t i = 0; i < org->intern_cap; i++) {
            if (!org->intern[i])
                continue;
            size_t j = hash_exact(org->intern[i]) & (nc - 1);
            while (nt[j])
                j = (j + 1) & (nc - 1);
            nt[j] = org->intern[i];
        }
        eg_free(org->intern);
        org->intern = nt;
        org->intern_cap = nc;
    }
    size_t j = hash_exact(s) & (org->intern_cap - 1);
    while (org->intern[j]) {
        if (strcmp(org->intern[j], s) == 0)
            return org->intern[j];
        j = (j + 1) & (org->intern_cap - 1);
    }
    const char *d = arena_strdup(org, s);
    if (!d)
        return NULL;
    org->intern[j] = d;
    org->intern_n++;
    return d;
}

/* ---------------------------------------------------------------- mailbox index */

static int midx_put(struct mx_org *org, uint64_t h, uint32_t m)
{
    if ((org->midx_n + 1) * 2 > org->midx_cap) {
        size_t nc = org->midx_cap ? org->midx_cap * 2 : 1024;
        struct mx_midx *nt = eg_malloc(nc * sizeof *nt);
        if (!nt)
            return EG_ENOMEM;
        for (size_t i = 0; i < nc; i++)
            nt[i].m = MX_NONE;
        for (size_t i = 0; i < org->midx_cap; i++) {
            if (org->midx[i].m == MX_NONE)
                continue;
            size_t j = org->midx[i].h & (nc - 1);
            while (nt[j].m != MX_NONE)
                j = (j + 1) & (nc - 1);
            nt[j] = org->midx[i];
        }
        eg_free(org->midx);
        org->midx = nt;
        org->midx_cap = nc;
    }
    size_t j = h & (org->midx_cap - 1);
    while (org->midx[j].m != MX_NONE) {
        if (org->midx[j].h == h && org->midx[j].m == m)
            return 0; /* same key twice for one mailbox */
        j = (j + 1) & (org->midx_cap - 1);
    }
    org->midx[j].h = h;
    org->midx[j].m = m;
    org->midx_n++;
    return 0;
}

/* The identity forms of a mailbox, for indexing and verification. Returns the count. */
static size_t mailbox_forms(struct mx_org *org, const struct mx_mailbox *m, const char **f,
                            char *guidbuf, char *extbuf, char *downlevel, size_t dlsize)
{
    size_t n = 0;
    f[n++] = m->alias; /* also SamAccountName */
    f[n++] = m->name;
    f[n++] = m->smtp;
    f[n++] = m->upn;
    f[n++] = m->dn;
    f[n++] = m->canonical;
    f[n++] = m->legacy_dn;
    f[n++] = m->identity;
    mx_guid_text(m->guid, guidbuf);
    f[n++] = guidbuf;
    if (org->profile == MX_PROFILE_ONLINE) {
        mx_guid_text(m->ext_id, extbuf);
        f[n++] = extbuf;
    } else {
        snprintf(downlevel, dlsize, "CONTOSO\\%s", m->alias);
        f[n++] = downlevel;
    }
    return n;
}

static int mailbox_index(struct mx_org *org, uint32_t mi)
{
    const struct mx_mailbox *m = &org->mbx[mi];
    const char *f[16];
    char g[40], e[40], dl[300];
    size_t n = mailbox_forms(org, m, f, g, e, dl, sizeof dl);
    for (size_t i = 0; i < n; i++) {
        int rc = midx_put(org, hash_lower(f[i]), mi);
        if (rc != 0)
            return rc;
    }
    for (uint32_t i = 0; i < m->n_proxies; i++) {
        int rc = midx_put(org, hash_lower(m->proxies[i]), mi);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static bool mailbox_matches(struct mx_org *org, const struct mx_mailbox *m, const char *q,
                            const uint8_t *qguid)
{
    const char *f[16];
    char g[40], e[40], dl[300];
    if (qguid && (memcmp(qguid, m->guid, 16) == 0 ||
                  (org->profile == MX_PROFILE_ONLINE && memcmp(qguid, m->ext_id, 16) == 0)))
        return true;
    size_t n = mailbox_forms(org, m, f, g, e, dl, sizeof dl);
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(f[i], q) == 0)
            return true;
    for (uint32_t i = 0; i < m->n_proxies; i++)
        if (strcasecmp(m->proxies[i], q) == 0)
            return true;
    return false;
}

int mx_find_mailbox(struct mx_org *org, const char *id, uint32_t *ret)
{
    uint8_t g[16];
    char gt[40];
    const char *q = id;
    bool is_guid = mx_guid_parse(id, g);
    if (is_guid) {
        mx_guid_text(g, gt);
        q = gt;
    } else if (strncasecmp(id, "smtp:", 5) == 0) {
        q = id + 5;
    }
    if (!org->midx_cap || !*q)
        return EG_ENOTFOUND;
    uint64_t h = hash_lower(q);
    uint32_t found = MX_NONE;
    size_t j = h & (org->midx_cap - 1);
    while (org->midx[j].m != MX_NONE) {
        if (org->midx[j].h == h && org->midx[j].m != found &&
            mailbox_matches(org, &org->mbx[org->midx[j].m], q, is_guid ? g : NULL)) {
            if (found != MX_NONE)
                return EG_ECONFLICT;
            found = org->midx[j].m;
        }
        j = (j + 1) & (org->midx_cap - 1);
    }
    if (found == MX_NONE)
        return EG_ENOTFOUND;
    *ret = found;
    return 0;
}

bool mx_mailbox_wild(const struct mx_mailbox *m, const char *p)
{
    return mx_wildcard(p, m->name) || mx_wildcard(p, m->alias) || mx_wildcard(p, m->smtp) ||
           mx_wildcard(p, m->upn) || mx_wildcard(p, m->display);
}

/* Fill the derived identity strings of mailbox m (alias, name, display, smtp, upn set). */
static int mailbox_derive(struct mx_org *org, struct mx_mailbox *m)
{
    char g[40], hex[33];
    mx_guid_text(m->guid, g);
    size_t k = 0;
    for (const char *p = g; *p; p++)
        if (*p != '-')
            hex[k++] = *p;
    hex[k] = '\0';
    if (org->profile == MX_PROFILE_ONLINE) {
        m->dn = arena_printf(org,
                             "CN=%s,OU=contoso.onmicrosoft.com,OU=Microsoft Exchange Hosted "
                             "Organizations,DC=EURPR01A001,DC=prod,DC=outlook,DC=com",
                             m->name);
        m->canonical = arena_printf(org,
                                    "EURPR01A001.prod.outlook.com/Microsoft Exchange Hosted "
                                    "Organizations/contoso.onmicrosoft.com/%s",
                                    m->name);
        m->legacy_dn = arena_printf(org,
                                    "/o=ExchangeLabs/ou=Exchange Administrative Group "
                                    "(FYDIBOHF23SPDLT)/cn=Recipients/cn=%s-%s",
                                    hex, m->alias);
        m->identity = m->name;
    } else {
        m->dn = arena_printf(org, "CN=%s,CN=Users,DC=contoso,DC=example", m->name);
        m->canonical = arena_printf(org, "contoso.example/Users/%s", m->name);
        m->legacy_dn = arena_printf(org,
                                    "/o=Contoso/ou=Exchange Administrative Group "
                                    "(FYDIBOHF23SPDLT)/cn=Recipients/cn=%s-%s",
                                    hex, m->alias);
        m->identity = m->canonical;
    }
    if (!m->dn || !m->canonical || !m->legacy_dn)
        return EG_ENOMEM;
    return 0;
}

static int mailbox_slot(struct mx_org *org, uint32_t *ret)
{
    if (org->n_mbx >= (size_t)INT32_MAX)
        return EG_ELIMIT;
    if (org->n_mbx == org->cap_mbx) {
        size_t nc = org->cap_mbx ? org->cap_mbx * 2 : 64;
        struct mx_mailbox *nv = eg_reallocarray(org->mbx, nc, sizeof *nv);
        if (!nv)
            return EG_ENOMEM;
        org->mbx = nv;
        org->cap_mbx = nc;
    }
    struct mx_mailbox *m = &org->mbx[org->n_mbx];
    memset(m, 0, sizeof *m);
    m->dev_head = m->dev_tail = MX_NONE;
    m->as_enabled = true;
    m->policy_defaulted = true;
    m->policy = mx_intern(org, "Default");
    if (!m->policy)
        return EG_ENOMEM;
    *ret = (uint32_t)org->n_mbx;
    return 0;
}

int mx_org_add_mailbox(struct mx_org *org, const struct mx_mailbox_spec *spec)
{
    if (!org || !spec || !spec->alias || !*spec->alias ||
        strlen(spec->alias) > EG_MAX_LOCALPART_LEN || (spec->n_proxies && !spec->proxies))
        return EG_EINVAL;
    int rc = 0;
    uint32_t mi, other;
    char smtp[EG_MAX_MAILBOX_LEN + 1];
    pthread_mutex_lock(&org->lock);
    const char *name = spec->name ? spec->name : spec->alias;
    if (spec->smtp)
        snprintf(smtp, sizeof smtp, "%s", spec->smtp);
    else
        snprintf(smtp, sizeof smtp, "%s@contoso.example", spec->alias);
    const char *upn = spec->upn ? spec->upn : smtp;
    const char *taken[] = {spec->alias, name, smtp, upn};
    for (size_t i = 0; i < 4; i++) {
        if (!*taken[i] || mx_find_mailbox(org, taken[i], &other) != EG_ENOTFOUND) {
            rc = EG_EINVAL;
            goto out;
        }
    }
    if ((rc = mailbox_slot(org, &mi)) != 0)
        goto out;
    struct mx_mailbox *m = &org->mbx[mi];
    m->alias = arena_strdup(org, spec->alias);
    m->name = arena_strdup(org, name);
    m->display = arena_strdup(org, spec->display_name ? spec->display_name : name);
    m->smtp = arena_strdup(org, smtp);
    m->upn = arena_strdup(org, upn);
    if (spec->n_proxies) {
        m->proxies = arena_ptrs(org, spec->n_proxies);
        if (!m->proxies) {
            rc = EG_ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < spec->n_proxies; i++)
            if (!(m->proxies[i] = arena_strdup(org, spec->proxies[i] ? spec->proxies[i] : ""))) {
                rc = EG_ENOMEM;
                goto out;
            }
        m->n_proxies = (uint32_t)spec->n_proxies;
    }
    if (!m->alias || !m->name || !m->display || !m->smtp || !m->upn) {
        rc = EG_ENOMEM;
        goto out;
    }
    mx_rand_guid(&org->rng, m->guid);
    mx_rand_guid(&org->rng, m->ext_id);
    m->as_enabled = !spec->activesync_disabled;
    m->when_created = m->when_changed = mx_now(org);
    if ((rc = mailbox_derive(org, m)) != 0)
        goto out;
    org->n_mbx++;
    rc = mailbox_index(org, mi);
out:
    pthread_mutex_unlock(&org->lock);
    return rc;
}

int mx_org_add_policy(struct mx_org *org, const char *name)
{
    if (!org || !name || !*name || strlen(name) > EG_MAX_POLICY_LEN)
        return EG_EINVAL;
    int rc = 0;
    pthread_mutex_lock(&org->lock);
    if (mx_strv_find(&org->policies, name) < 0)
        rc = mx_strv_add(&org->policies, name);
    pthread_mutex_unlock(&org->lock);
    return rc;
}

/* ---------------------------------------------------------------- devices */

static size_t gidx_slot(const uint8_t g[16], size_t cap)
{
    uint64_t h = 0;
    for (int i = 0; i < 8; i++)
        h = h << 8 | g[i];
    return mix64(h ^ g[15]) & (cap - 1);
}

static int gidx_put(struct mx_org *org, uint32_t di)
{
    if ((org->gidx_n + 1) * 2 > org->gidx_cap) {
        size_t nc = org->gidx_cap ? org->gidx_cap * 2 : 1024;
        uint32_t *nt = eg_malloc(nc * sizeof *nt);
        if (!nt)
            return EG_ENOMEM;
        for (size_t i = 0; i < nc; i++)
            nt[i] = MX_NONE;
        for (size_t i = 0; i < org->gidx_cap; i++) {
            if (org->gidx[i] == MX_NONE)
                continue;
            size_t j = gidx_slot(org->dev[org->gidx[i]].guid, nc);
            while (nt[j] != MX_NONE)
                j = (j + 1) & (nc - 1);
            nt[j] = org->gidx[i];
        }
        eg_free(org->gidx);
        org->gidx = nt;
        org->gidx_cap = nc;
    }
    size_t j = gidx_slot(org->dev[di].guid, org->gidx_cap);
    while (org->gidx[j] != MX_NONE)
        j = (j + 1) & (org->gidx_cap - 1);
    org->gidx[j] = di;
    org->gidx_n++;
    return 0;
}

static uint32_t gidx_get(struct mx_org *org, const uint8_t g[16])
{
    if (!org->gidx_cap)
        return MX_NONE;
    size_t j = gidx_slot(g, org->gidx_cap);
    while (org->gidx[j] != MX_NONE) {
        const struct mx_device *d = &org->dev[org->gidx[j]];
        if (memcmp(d->guid, g, 16) == 0 && !d->removed)
            return org->gidx[j];
        j = (j + 1) & (org->gidx_cap - 1);
    }
    return MX_NONE;
}

/* A new device slot linked to mailbox mi (fields zeroed, list head/tail updated). */
static int device_slot(struct mx_org *org, uint32_t mi, uint32_t *ret)
{
    if (org->n_dev >= (size_t)INT32_MAX)
        return EG_ELIMIT;
    if (org->n_dev == org->cap_dev) {
        size_t nc = org->cap_dev ? org->cap_dev + org->cap_dev / 2 : 256;
        struct mx_device *nv = eg_reallocarray(org->dev, nc, sizeof *nv);
        if (!nv)
            return EG_ENOMEM;
        org->dev = nv;
        org->cap_dev = nc;
    }
    uint32_t di = (uint32_t)org->n_dev;
    struct mx_device *d = &org->dev[di];
    memset(d, 0, sizeof *d);
    d->mailbox = mi;
    d->next = MX_NONE;
    d->wipe_supported = true;
    *ret = di;
    return 0;
}

static int device_link(struct mx_org *org, uint32_t di)
{
    struct mx_device *d = &org->dev[di];
    struct mx_mailbox *m = &org->mbx[d->mailbox];
    int rc = gidx_put(org, di);
    if (rc != 0)
        return rc;
    if (m->dev_tail == MX_NONE)
        m->dev_head = di;
    else
        org->dev[m->dev_tail].next = di;
    m->dev_tail = di;
    m->n_live++;
    m->has_partnership = true;
    org->n_dev++;
    org->live_dev++;
    return 0;
}

void mx_device_remove(struct mx_org *org, uint32_t di)
{
    struct mx_device *d = &org->dev[di];
    if (d->removed)
        return;
    struct mx_mailbox *m = &org->mbx[d->mailbox];
    uint32_t prev = MX_NONE;
    for (uint32_t x = m->dev_head; x != MX_NONE; prev = x, x = org->dev[x].next) {
        if (x != di)
            continue;
        if (prev == MX_NONE)
            m->dev_head = d->next;
        else
            org->dev[prev].next = d->next;
        if (m->dev_tail == di)
            m->dev_tail = prev;
        break;
    }
    d->removed = true;
    m->n_live--;
    org->live_dev--;
    if (d->notify) {
        mx_strv_clear(d->notify);
        eg_freep(&d->notify);
    }
}

uint32_t mx_mailbox_device(struct mx_org *org, uint32_t mi, const char *device_id)
{
    for (uint32_t x = org->mbx[mi].dev_head; x != MX_NONE; x = org->dev[x].next)
        if (strcasecmp(org->dev[x].device_id, device_id) == 0)
            return x;
    return MX_NONE;
}

void mx_device_name(const struct mx_device *d, char *buf, size_t size)
{
    if (d->client_type && strcmp(d->client_type, "Outlook") == 0)
        snprintf(buf, size, "REST\xC2\xA7Outlook\xC2\xA7%s", d->device_id);
    else
        snprintf(buf, size, "%s\xC2\xA7%s", d->type, d->device_id);
}

void mx_device_identity(struct mx_org *org, const struct mx_device *d, char *buf, size_t size)
{
    char name[256];
    mx_device_name(d, name, sizeof name);
    /* On-prem: the canonical name path; Exchange Online shows <mailbox name>\Exchange...\. */
    if (org->profile == MX_PROFILE_ONLINE)
        snprintf(buf, size, "%s\\ExchangeActiveSyncDevices\\%s", org->mbx[d->mailbox].name, name);
    else
        snprintf(buf, size, "%s/ExchangeActiveSyncDevices/%s", org->mbx[d->mailbox].canonical,
                 name);
}

void mx_device_dn(struct mx_org *org, const struct mx_device *d, char *buf, size_t size)
{
    char name[256];
    mx_device_name(d, name, sizeof name);
    snprintf(buf, size, "CN=%s,CN=ExchangeActiveSyncDevices,%s", name, org->mbx[d->mailbox].dn);
}

void mx_device_imei(const struct mx_device *d, char *buf, size_t size)
{
    uint64_t h = 0;
    for (int i = 0; i < 8; i++)
        h = h << 8 | d->guid[8 + i];
    snprintf(buf, size, "35%013llu", (unsigned long long)(mix64(h) % UINT64_C(10000000000000)));
}

void mx_device_phone(const struct mx_device *d, char *buf, size_t size)
{
    uint64_t h = 0;
    for (int i = 0; i < 8; i++)
        h = h << 8 | d->guid[i];
    snprintf(buf, size, "+1425555%04llu", (unsigned long long)(mix64(h) % 10000));
}

static const char *const ACTIVE_SYNC_DEVICES = "ExchangeActiveSyncDevices";

/* Find "<sep>ExchangeActiveSyncDevices<sep>" (case-insensitive) in id. */
static const char *find_container(const char *id, char sep)
{
    size_t cl = strlen(ACTIVE_SYNC_DEVICES);
    for (const char *p = strchr(id, sep); p; p = strchr(p + 1, sep))
        if (strncasecmp(p + 1, ACTIVE_SYNC_DEVICES, cl) == 0 && p[1 + cl] == sep)
            return p;
    return NULL;
}

static int device_in_mailbox_by_name(struct mx_org *org, const char *mbx_id, size_t mbx_len,
                                     const char *objname, uint32_t *ret)
{
    char *mq = eg_strndup(mbx_id, mbx_len);
    if (!mq)
        return EG_ENOMEM;
    uint32_t mi;
    int rc = mx_find_mailbox(org, mq, &mi);
    eg_free(mq);
    if (rc != 0)
        return rc == EG_ECONFLICT ? EG_ECONFLICT : EG_ENOTFOUND;
    char name[256];
    for (uint32_t x = org->mbx[mi].dev_head; x != MX_NONE; x = org->dev[x].next) {
        mx_device_name(&org->dev[x], name, sizeof name);
        if (strcasecmp(name, objname) == 0) {
            *ret = x;
            return 0;
        }
    }
    return EG_ENOTFOUND;
}

int mx_find_device(struct mx_org *org, const char *id, uint32_t *ret)
{
    uint8_t g[16];
    if (mx_guid_parse(id, g)) {
        uint32_t di = gidx_get(org, g);
        if (di == MX_NONE)
            return EG_ENOTFOUND;
        *ret = di;
        return 0;
    }
    size_t cl = strlen(ACTIVE_SYNC_DEVICES);
    const char *p = find_container(id, '\\');
    if (!p)
        p = find_container(id, '/');
    if (p)
        return device_in_mailbox_by_name(org, id, (size_t)(p - id), p + cl + 2, ret);
    static const char mid[] = ",CN=ExchangeActiveSyncDevices,";
    if (strncasecmp(id, "CN=", 3) == 0) {
        for (const char *q = id + 3; *q; q++) {
            if (strncasecmp(q, mid, sizeof mid - 1) != 0)
                continue;
            char obj[256];
            size_t ol = (size_t)(q - (id + 3));
            if (ol >= sizeof obj)
                return EG_ENOTFOUND;
            memcpy(obj, id + 3, ol);
            obj[ol] = '\0';
            const char *mdn = q + sizeof mid - 1;
            return device_in_mailbox_by_name(org, mdn, strlen(mdn), obj, ret);
        }
    }
    return EG_ENOTFOUND;
}

/* ---------------------------------------------------------------- access state (§10.3) */

static const char *charac_value(const struct mx_device *d, unsigned c)
{
    switch (c) {
    case CH_DEVICETYPE:
        return d->type;
    case CH_DEVICEMODEL:
        return d->model;
    case CH_DEVICEOS:
        return d->os;
    case CH_USERAGENT:
        return d->ua;
    default:
        return NULL; /* XMSWLHeader is not simulated */
    }
}

void mx_eval_device(struct mx_org *org, struct mx_device *d, int64_t now)
{
    const struct mx_mailbox *m = &org->mbx[d->mailbox];
    unsigned st, rs;
    const char *rule = NULL;

    if (d->policy_failed) {
        st = ST_BLOCKED;
        rs = RS_POLICY;
    } else if (mx_strv_find(&m->blocked, d->device_id) >= 0) {
        st = ST_BLOCKED;
        rs = RS_INDIVIDUAL;
    } else if (mx_strv_find(&m->allowed, d->device_id) >= 0) {
        st = ST_ALLOWED;
        rs = RS_INDIVIDUAL;
    } else if (now < d->discovery_until) {
        st = ST_DISCOVERY;
        rs = RS_GLOBAL;
    } else {
        /* Block rules beat Quarantine rules beat Allow rules (steps 6-8). */
        static const unsigned order[3] = {LV_BLOCK, LV_QUARANTINE, LV_ALLOW};
        const struct mx_rule *hit = NULL;
        for (int k = 0; k < 3 && !hit; k++)
            for (size_t i = 0; i < org->n_rules && !hit; i++) {
                const struct mx_rule *r = &org->rules[i];
                const char *v = charac_value(d, r->charac);
                if (r->level == order[k] && v && strcasecmp(v, r->query) == 0)
                    hit = r;
            }
        unsigned lv = hit ? hit->level : org->default_level;
        st = lv == LV_BLOCK ? ST_BLOCKED : lv == LV_QUARANTINE ? ST_QUARANTINED : ST_ALLOWED;
        rs = hit ? RS_DEVICERULE : RS_GLOBAL;
        if (hit)
            rule = mx_intern(org, hit->name);
    }
    if (d->state != st || d->reason != rs || d->rule != rule)
        d->changed = now;
    d->state = (uint8_t)st;
    d->reason = (uint8_t)rs;
    d->rule = rule;
}

void mx_recompute_mailbox(struct mx_org *org, uint32_t mi)
{
    int64_t now = mx_now(org);
    for (uint32_t x = org->mbx[mi].dev_head; x != MX_NONE; x = org->dev[x].next)
        mx_eval_device(org, &org->dev[x], now);
}

void mx_recompute_all(struct mx_org *org)
{
    int64_t now = mx_now(org);
    for (size_t i = 0; i < org->n_dev; i++)
        if (!org->dev[i].removed)
            mx_eval_device(org, &org->dev[i], now);
}

bool mx_has_partnership(struct mx_org *org, const struct mx_mailbox *m)
{
    return org->beh.stale_partnership ? m->has_partnership : m->n_live > 0;
}

const char *mx_wipe_status(const struct mx_device *d)
{
    if (d->wipe_ack)
        return "DeviceWipeSucceeded";
    if (!d->wipe_request && !d->wipe_sent)
        return "DeviceOk";
    if (!d->wipe_supported)
        return "DeviceBlocked";
    return "DeviceWipePending";
}

/* ---------------------------------------------------------------- device sync (§8.1, §15) */

static const char *spec_or(struct mx_org *org, const char *v, const char *keep, const char *dflt,
                           bool *oom)
{
    const char *s = v ? v : keep ? keep : dflt;
    const char *r = mx_intern(org, s);
    if (!r)
        *oom = true;
    return r;
}

int mx_org_device_sync(struct mx_org *org, const char *mailbox, const char *device_id,
                       const struct mx_sync_spec *spec, struct mx_sync_outcome *ret)
{
    static const struct mx_sync_spec none;
    if (!org || !mailbox || !device_id || !ret || !*device_id ||
        strlen(device_id) > EG_MAX_DEVICE_ID_LEN)
        return EG_EINVAL;
    if (!spec)
        spec = &none;
    struct mx_sync_outcome o;
    memset(&o, 0, sizeof o);
    uint32_t mi, di;
    bool oom = false;
    int rc;

    pthread_mutex_lock(&org->lock);
    if ((rc = mx_find_mailbox(org, mailbox, &mi)) != 0)
        goto out;
    int64_t now = mx_now(org);
    if (!org->mbx[mi].as_enabled) {
        o.result = MX_SYNC_USER_DISABLED;
        goto done;
    }
    di = mx_mailbox_device(org, mi, device_id);
    if (di == MX_NONE) {
        if ((rc = device_slot(org, mi, &di)) != 0)
            goto out;
        struct mx_device *d = &org->dev[di];
        d->device_id = arena_strdup(org, device_id);
        if (!d->device_id) {
            rc = EG_ENOMEM;
            goto out;
        }
        mx_rand_guid(&org->rng, d->guid);
        d->first_sync = d->created = d->last_policy = now;
        d->discovery_until = org->beh.discovery_ms > 0 ? now + org->beh.discovery_ms : 0;
        if ((rc = device_link(org, di)) != 0)
            goto out;
        o.created = true;
    }
    struct mx_device *d = &org->dev[di];
    const char *type = spec_or(org, spec->device_type, d->type, "EASDevice", &oom);
    d->type = type;
    d->model = spec_or(org, spec->model, d->model, type ? type : "EASDevice", &oom);
    d->os = spec_or(org, spec->os, d->os, "", &oom);
    d->os_lang = spec_or(org, spec->os_language, d->os_lang, "", &oom);
    d->ua = spec_or(org, spec->user_agent, d->ua, "", &oom);
    d->friendly = spec_or(org, spec->friendly_name, d->friendly, "", &oom);
    d->oper = spec_or(org, spec->mobile_operator, d->oper, "", &oom);
    d->eas = spec_or(org, spec->eas_version, d->eas, "16.1", &oom);
    d->client_type = spec_or(org, spec->client_type, d->client_type, "EAS", &oom);
    d->client_version = spec_or(org, spec->client_version, d->client_version, "", &oom);
    if (oom) {
        rc = EG_ENOMEM;
        goto out;
    }
    d->wipe_supported = !spec->wipe_unsupported;
    d->policy_failed = spec->fails_policy;
    d->last_attempt = now;
    mx_eval_device(org, d, now);

    if (d->wipe_request) {
        /* A requested wipe is delivered on every request while the partnership exists, also
         * after a successful ack (the device is wiped again on reconnect). */
        if (!d->wipe_supported) {
            o.result = MX_SYNC_BLOCKED;
        } else {
            d->wipe_sent = now;
            o.result = MX_SYNC_WIPE;
            o.account_only = d->account_only;
            if (spec->ack == MX_ACK_SUCCESS && org->profile != MX_PROFILE_ONLINE) {
                d->wipe_ack = now;
                o.acked = true;
            }
        }
    } else {
        switch (d->state) {
        case ST_ALLOWED:
            o.result = MX_SYNC_ALLOWED;
            d->last_success = now;
            break;
        case ST_QUARANTINED:
            o.result = MX_SYNC_QUARANTINED;
            break;
        case ST_DISCOVERY:
            o.result = MX_SYNC_DISCOVERY;
            break;
        default:
            o.result = MX_SYNC_BLOCKED;
            break;
        }
    }
    d->changed = now;
    snprintf(o.access_state, sizeof o.access_state, "%s", mx_state_name(d->state));
    snprintf(o.access_reason, sizeof o.access_reason, "%s", mx_reason_name(d->reason));
    snprintf(o.access_rule, sizeof o.access_rule, "%s", d->rule ? d->rule : "");
    mx_device_identity(org, d, o.identity, sizeof o.identity);
    mx_guid_text(d->guid, o.guid);
done:
    *ret = o;
    rc = 0;
out:
    pthread_mutex_unlock(&org->lock);
    return rc;
}

/* ---------------------------------------------------------------- seeding */

struct seed_kind {
    const char *type, *prefix;
    bool upper_hex;
    size_t hex_digits;
    const char *models[3], *os[3], *ua[3];
    const char *client_type;
};

static const struct seed_kind seed_kinds[] = {
    {"iPhone",
     "Appl",
     true,
     12,
     {"iPhone14C5", "iPhone15C2", "iPhone16C1"},
     {"iOS 17.5.1 21F90", "iOS 17.6 21G80", "iOS 18.0 22A3354"},
     {"Apple-iPhone14C5/2105.90", "Apple-iPhone15C2/2107.80", "Apple-iPhone16C1/2201.3354"},
     "EAS"},
    {"iPad",
     "Appl",
     true,
     12,
     {"iPad13C1", "iPad14C3", "iPad13C16"},
     {"iPadOS 17.5 21F79", "iPadOS 17.6 21G80", "iPadOS 18.0 22A3354"},
     {"Apple-iPad13C1/2105.79", "Apple-iPad14C3/2107.80", "Apple-iPad13C16/2201.3354"},
     "EAS"},
    {"Android",
     "androidc",
     false,
     12,
     {"SM-S911B", "Pixel 8", "SM-A546B"},
     {"Android 14", "Android 13", "Android 14"},
     {"Android-SAMSUNG-SM-S911B/101.60000", "Android/14-EAS-2.0", "Android-SAMSUNG-SM-A546B/101"},
     "EAS"},
    {"Outlook",
     "",
     true,
     32,
     {"Outlook for iOS and Android", "Outlook for iOS and Android", "Outlook for iOS and Android"},
     {"iOS 17.5.1", "Android 14", "iOS 18.0"},
     {"Outlook-iOS/2.0", "Outlook-Android/2.0", "Outlook-iOS/2.0"},
     "Outlook"},
    {"WindowsMail",
     "",
     true,
     32,
     {"Surface Pro 9", "Latitude 7440", "ThinkPad X1"},
     {"Windows 11", "Windows 10", "Windows 11"},
     {"MSFT-WIN-3/10.0.22631", "MSFT-WIN-3/10.0.19045", "MSFT-WIN-3/10.0.22631"},
     "EAS"},
};

static const char *profile_build(enum mx_profile p)
{
    switch (p) {
    case MX_PROFILE_2010:
        return "14.3 (Build 123.4)";
    case MX_PROFILE_2013:
        return "15.0 (Build 1497.2)";
    case MX_PROFILE_2016:
        return "15.1 (Build 2507.6)";
    case MX_PROFILE_ONLINE:
        return "15.20 (Build 7762.25)";
    }
    return "";
}

static int seed_mailboxes(struct mx_org *org, uint64_t *rng, size_t n)
{
    for (size_t i = 1; i <= n; i++) {
        uint32_t mi;
        int rc = mailbox_slot(org, &mi);
        if (rc != 0)
            return rc;
        struct mx_mailbox *m = &org->mbx[mi];
        bool online = org->profile == MX_PROFILE_ONLINE;
        m->alias = arena_printf(org, "user%04zu", i);
        m->display = arena_printf(org, "User %04zu", i);
        m->name = online ? m->alias : m->display;
        m->smtp = arena_printf(org, "user%04zu@contoso.example", i);
        m->upn = m->smtp;
        m->proxies = arena_ptrs(org, 1);
        if (!m->alias || !m->display || !m->smtp || !m->proxies)
            return EG_ENOMEM;
        m->proxies[0] = online ? arena_printf(org, "user%04zu@contoso.onmicrosoft.com", i)
                               : arena_printf(org, "user%04zu@mail.contoso.example", i);
        if (!m->proxies[0])
            return EG_ENOMEM;
        m->n_proxies = 1;
        mx_rand_guid(rng, m->guid);
        mx_rand_guid(rng, m->ext_id);
        m->when_created = MX_BASE_MS - (int64_t)(splitmix(rng) % (uint64_t)(400 * MX_DAY_MS));
        m->when_changed = m->when_created;
        if ((rc = mailbox_derive(org, m)) != 0)
            return rc;
        org->n_mbx++;
        if ((rc = mailbox_index(org, mi)) != 0)
            return rc;
    }
    return 0;
}

static int seed_devices(struct mx_org *org, uint64_t *rng, uint64_t key, size_t n, bool lists)
{
    const char *cv = mx_intern(org, profile_build(org->profile));
    const char *empty = mx_intern(org, "");
    const char *lang = mx_intern(org, "en-US");
    if (!cv || !empty || !lang)
        return EG_ENOMEM;
    for (size_t j = 0; j < n; j++) {
        uint32_t mi = j < org->n_mbx ? (uint32_t)j : (uint32_t)(splitmix(rng) % org->n_mbx);
        uint32_t di;
        int rc = device_slot(org, mi, &di);
        if (rc != 0)
            return rc;
        struct mx_device *d = &org->dev[di];
        uint64_t pick = splitmix(rng) % 100;
        const struct seed_kind *k = &seed_kinds[pick < 35   ? 0
                                                : pick < 45 ? 1
                                                : pick < 75 ? 2
                                                : pick < 90 ? 3
                                                            : 4];
        unsigned var = (unsigned)(splitmix(rng) % 3);
        /* Unique ids: a bijective mix of the index, so no two seeded devices collide. */
        uint64_t u = mix64((uint64_t)j ^ key), u2 = mix64(u ^ 0x5bd1e995);
        char id[48];
        if (k->hex_digits == 32)
            snprintf(id, sizeof id, "%016llX%016llX", (unsigned long long)u,
                     (unsigned long long)u2);
        else if (k->upper_hex)
            snprintf(id, sizeof id, "%s%016llX", k->prefix, (unsigned long long)u);
        else
            snprintf(id, sizeof id, "%s%016llx", k->prefix, (unsigned long long)u);
        d->device_id = arena_strdup(org, id);
        d->type = mx_intern(org, k->type);
        d->model = mx_intern(org, k->models[var]);
        d->os = mx_intern(org, k->os[var]);
        d->ua = mx_intern(org, k->ua[var]);
        d->client_type = mx_intern(org, k->client_type);
        d->eas = mx_intern(org, (pick >= 45 && pick < 75 && var == 1) ? "14.1" : "16.1");
        d->client_version = strcmp(k->client_type, "Outlook") == 0 ? mx_intern(org, "1.0") : cv;
        d->os_lang = lang;
        d->friendly = pick >= 45 && pick < 75 ? d->model : empty;
        d->oper = empty;
        if (!d->device_id || !d->type || !d->model || !d->os || !d->ua || !d->client_type ||
            !d->eas || !d->client_version)
            return EG_ENOMEM;
        mx_rand_guid(rng, d->guid);
        d->first_sync = MX_BASE_MS - (int64_t)(splitmix(rng) % (uint64_t)(180 * MX_DAY_MS));
        d->last_attempt = MX_BASE_MS - (int64_t)(splitmix(rng) % (uint64_t)(2 * MX_DAY_MS));
        d->last_success = d->last_attempt;
        d->last_policy = d->first_sync;
        d->created = d->first_sync;
        d->changed = d->last_success;
        d->wipe_supported = splitmix(rng) % 50 != 0;
        if ((rc = device_link(org, di)) != 0)
            return rc;
        if (lists) {
            uint64_t l = splitmix(rng) % 100;
            struct mx_mailbox *m = &org->mbx[mi];
            if (l < 10)
                rc = mx_strv_add(&m->allowed, d->device_id);
            else if (l < 13)
                rc = mx_strv_add(&m->blocked, d->device_id);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

void mx_org_free(struct mx_org *org)
{
    if (!org)
        return;
    for (size_t i = 0; i < org->n_mbx; i++) {
        mx_strv_clear(&org->mbx[i].allowed);
        mx_strv_clear(&org->mbx[i].blocked);
    }
    for (size_t i = 0; i < org->n_dev; i++)
        if (org->dev[i].notify) {
            mx_strv_clear(org->dev[i].notify);
            eg_free(org->dev[i].notify);
        }
    for (size_t i = 0; i < org->n_rules; i++) {
        eg_free(org->rules[i].name);
        eg_free(org->rules[i].query);
    }
    eg_free(org->rules);
    for (size_t i = 0; i < org->n_faults; i++)
        eg_free(org->faults[i].cmdlet);
    for (size_t i = 0; i < org->n_rbac; i++) {
        eg_free(org->rbac[i].cmdlet);
        mx_strv_clear(&org->rbac[i].hidden_params);
        mx_strv_clear(&org->rbac[i].allowed_params);
    }
    eg_free(org->rbac);
    mx_strv_clear(&org->admin_mail);
    mx_strv_clear(&org->policies);
    eg_free(org->user_mail_insert);
    eg_free(org->ota_insert);
    json_decref(org->calls);
    eg_free(org->mbx);
    eg_free(org->midx);
    eg_free(org->dev);
    eg_free(org->gidx);
    eg_free(org->intern);
    for (struct mx_arena *a = org->arena, *n; a; a = n) {
        n = a->next;
        eg_free(a);
    }
    pthread_mutex_destroy(&org->lock);
    eg_free(org);
}

int mx_org_new(const struct mx_org_opts *o, struct mx_org **ret)
{
    if (!o || !ret || (unsigned)o->profile > MX_PROFILE_ONLINE || (o->devices && !o->mailboxes) ||
        o->mailboxes >= (size_t)INT32_MAX || o->devices >= (size_t)INT32_MAX)
        return EG_EINVAL;
    struct mx_org *org = eg_calloc(1, sizeof *org);
    if (!org)
        return EG_ENOMEM;
    int rc = 0;
    pthread_mutex_init(&org->lock, NULL);
    org->profile = o->profile;
    uint64_t rng = o->seed ^ UINT64_C(0x6d6f636b2d657863); /* "mock-exc" */
    uint64_t key = splitmix(&rng);
    snprintf(org->admin_version, sizeof org->admin_version, "%s",
             o->admin_display_version ? o->admin_display_version : "");
    if (!o->admin_display_version)
        snprintf(org->admin_version, sizeof org->admin_version, "Version %s",
                 profile_build(o->profile));
    org->default_level = LV_ALLOW;
    org->beh.strict_duplicates = true;
    org->beh.recompute_on_set = true;
    snprintf(org->beh.requestor, sizeof org->beh.requestor, "%s",
             o->profile == MX_PROFILE_ONLINE ? "admin@contoso.onmicrosoft.com"
                                             : "contoso.example/Users/Administrator");
    org->calls_limit = 100000;
    org->calls = json_array();
    if (!org->calls || mx_strv_add(&org->policies, "Default") != 0) {
        rc = EG_ENOMEM;
        goto out;
    }
    mx_rand_guid(&rng, org->org_guid);
    org->settings_changed = MX_BASE_MS - 30 * MX_DAY_MS;
    if (o->mailboxes > 0 && (rc = seed_mailboxes(org, &rng, o->mailboxes)) != 0)
        goto out;
    if (o->devices > 0 && (rc = seed_devices(org, &rng, key, o->devices, o->seed_lists)) != 0)
        goto out;
    for (size_t i = 0; i < org->n_dev; i++)
        mx_eval_device(org, &org->dev[i], MX_BASE_MS);
    org->rng = splitmix(&rng);
out:
    if (rc != 0) {
        mx_org_free(org);
        return rc;
    }
    *ret = org;
    return 0;
}

/* ---------------------------------------------------------------- information */

enum mx_profile mx_org_profile(const struct mx_org *org)
{
    return org->profile;
}

size_t mx_org_device_count(struct mx_org *org)
{
    pthread_mutex_lock(&org->lock);
    size_t n = org->live_dev;
    pthread_mutex_unlock(&org->lock);
    return n;
}

size_t mx_org_mailbox_count(struct mx_org *org)
{
    pthread_mutex_lock(&org->lock);
    size_t n = org->n_mbx;
    pthread_mutex_unlock(&org->lock);
    return n;
}

static size_t strv_bytes(const struct mx_strv *sv)
{
    size_t b = sv->cap * sizeof(char *);
    for (size_t i = 0; i < sv->n; i++)
        b += strlen(sv->v[i]) + 1;
    return b;
}

size_t mx_org_memory(struct mx_org *org)
{
    pthread_mutex_lock(&org->lock);
    size_t b = sizeof *org + org->arena_bytes + org->intern_cap * sizeof(char *) +
               org->cap_mbx * sizeof(struct mx_mailbox) + org->midx_cap * sizeof(struct mx_midx) +
               org->cap_dev * sizeof(struct mx_device) + org->gidx_cap * sizeof(uint32_t) +
               org->cap_rules * sizeof(struct mx_rule);
    for (size_t i = 0; i < org->n_mbx; i++)
        b += strv_bytes(&org->mbx[i].allowed) + strv_bytes(&org->mbx[i].blocked);
    for (size_t i = 0; i < org->n_dev; i++)
        if (org->dev[i].notify)
            b += sizeof(struct mx_strv) + strv_bytes(org->dev[i].notify);
    pthread_mutex_unlock(&org->lock);
    return b;
}

void mx_org_get_behaviour(struct mx_org *org, struct mx_behaviour *ret)
{
    pthread_mutex_lock(&org->lock);
    *ret = org->beh;
    pthread_mutex_unlock(&org->lock);
}

void mx_org_set_behaviour(struct mx_org *org, const struct mx_behaviour *b)
{
    pthread_mutex_lock(&org->lock);
    org->beh = *b;
    org->beh.requestor[sizeof org->beh.requestor - 1] = '\0';
    if (org->beh.discovery_ms < 0)
        org->beh.discovery_ms = 0;
    pthread_mutex_unlock(&org->lock);
}

void mx_org_set_clock(struct mx_org *org, int64_t now_ms)
{
    pthread_mutex_lock(&org->lock);
    org->clock_ms = now_ms > 0 ? now_ms : 0;
    pthread_mutex_unlock(&org->lock);
}

void mx_org_advance_clock(struct mx_org *org, int64_t ms)
{
    pthread_mutex_lock(&org->lock);
    if (org->clock_ms > 0 && ms > 0)
        org->clock_ms += ms;
    pthread_mutex_unlock(&org->lock);
}

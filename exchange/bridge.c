/* bridge.c - shared pieces of the bridge interface. */
#include "exchange/bridge.h"
#include "common/alloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *const level_names[] = {"allow", "block", "quarantine"};

const char *eg_access_level_name(enum eg_access_level l)
{
    if ((unsigned)l >= sizeof level_names / sizeof level_names[0])
        return "?";
    return level_names[l];
}

int eg_access_level_parse(const char *s, enum eg_access_level *ret)
{
    if (!s)
        return EG_EINVAL;
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++)
        if (strcmp(s, level_names[i]) == 0) {
            *ret = (enum eg_access_level)i;
            return 0;
        }
    return EG_EINVAL;
}

void eg_bridge_error_set(struct eg_bridge_error *err, const char *code, bool transient,
                         const char *fmt, ...)
{
    va_list ap;
    if (!err)
        return;
    memset(err, 0, sizeof *err);
    snprintf(err->code, sizeof err->code, "%s", code);
    err->transient = transient;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

void eg_bridge_free(struct eg_bridge *b)
{
    if (!b)
        return;
    if (b->ops && b->ops->destroy)
        b->ops->destroy(b->impl);
    eg_free(b);
}

int eg_bridge_probe(struct eg_bridge *b, struct eg_bridge_error *err)
{
    if (!b || !b->ops)
        return EG_EINVAL;
    if (!b->ops->probe)
        return 0;
    return b->ops->probe(b->impl, err);
}

json_t *eg_bridge_status(struct eg_bridge *b)
{
    if (!b || !b->ops)
        return NULL;
    if (b->ops->status)
        return b->ops->status(b->impl);
    return json_pack("{s:s}", "kind", b->ops->name ? b->ops->name : "?");
}

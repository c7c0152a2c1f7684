/* fuzz_config.c - libFuzzer target for the configuration file parser: arbitrary bytes as the
 * text of a config file, applied over the built-in defaults (eg_config_parse_buffer). Every
 * diagnostic must be a located, terminated string, and the config must stay freeable. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/config.h"
#include "common/alloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int initialised;
    struct eg_config *c = NULL;
    struct eg_config_diags d = {0};

    if (!initialised) {
        eg_alloc_init();
        initialised = 1;
    }
    if (eg_config_defaults(&c) != 0)
        return 0;
    int rc = eg_config_parse_buffer(c, "fuzz.json", (const char *)data, size, &d);
    if (rc != 0 && rc != EG_EINVAL && rc != EG_ENOMEM)
        abort();
    if ((rc == 0) != (d.n == 0) && rc != EG_ENOMEM)
        abort();
    for (size_t i = 0; i < d.n; i++) {
        if (!memchr(d.v[i].where, '\0', sizeof d.v[i].where) ||
            !memchr(d.v[i].message, '\0', sizeof d.v[i].message) ||
            strncmp(d.v[i].where, "fuzz.json", 9) != 0)
            abort();
    }
    /* The values in force are always well formed. */
    if (!c->listen || !c->listen_addr || !c->state_dir || !c->log_level || !c->bridge ||
        c->workers < 1 || c->max_batch < 1)
        abort();
    eg_config_diags_free(&d);
    eg_config_free(c);
    return 0;
}

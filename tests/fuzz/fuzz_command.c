/* fuzz_command.c - libFuzzer target for the console's command parser: arbitrary bytes as an
 * HTTP request body. Every accepted body must have a canonical form that parses back to the
 * same canonical text (the idempotency comparison depends on it). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/command.h"
#include "common/alloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int initialised;
    struct eg_command **cmds = NULL;
    size_t n = 0;
    bool batch = false;
    struct eg_verr err;

    if (!initialised) {
        eg_alloc_init();
        initialised = 1;
    }
    int rc = eg_command_parse_body((const char *)data, size, 16, &cmds, &n, &batch, &err);
    if (rc < 0) {
        if (cmds || memchr(err.detail, '\0', sizeof err.detail) == NULL ||
            memchr(err.field, '\0', sizeof err.field) == NULL)
            abort();
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char *canon = eg_command_canonical(cmds[i]);
        char *key = eg_command_mailbox_key(cmds[i]);
        if (!canon || (cmds[i]->mailbox && !key))
            abort();
        struct eg_command **again = NULL;
        size_t n2 = 0;
        bool b2 = true;
        if (eg_command_parse_body(canon, strlen(canon), 1, &again, &n2, &b2, &err) != 0 ||
            n2 != 1 || b2)
            abort();
        char *canon2 = eg_command_canonical(again[0]);
        if (!canon2 || strcmp(canon, canon2) != 0)
            abort();
        eg_free(canon2);
        eg_commands_free(again, n2);
        eg_free(key);
        eg_free(canon);
    }
    eg_commands_free(cmds, n);
    return 0;
}

/* fuzz_target_config.c - libFuzzer target for the runtime target document (PUT /api/v1/config):
 * arbitrary bytes as a request body. An accepted document, shown as GET shows it and sent back
 * without its read-only members, must be accepted again (secrets kept from the first) and show
 * the same. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/target_config.h"
#include "common/alloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int initialised;
    struct eg_target_config *c = NULL, *again = NULL;
    struct eg_verr err;

    if (!initialised) {
        eg_alloc_init();
        initialised = 1;
    }
    int rc = eg_target_config_parse((const char *)data, size, NULL, &c, &err);
    if (rc < 0) {
        if (c || memchr(err.detail, '\0', sizeof err.detail) == NULL ||
            memchr(err.field, '\0', sizeof err.field) == NULL)
            abort();
        return 0;
    }
    json_t *shown = eg_target_config_redacted(c);
    if (!shown)
        abort();
    json_object_del(shown, "revision");
    json_object_del(shown, "updated_at");
    json_object_del(json_object_get(shown, "target"), "password_set");
    json_object_del(json_object_get(shown, "target"), "private_key_set");
    json_object_del(json_object_get(shown, "upload"), "hmac_key_set");
    char *text = json_dumps(shown, JSON_COMPACT);
    if (!text || eg_target_config_parse(text, strlen(text), c, &again, &err) != 0)
        abort();
    json_t *shown2 = eg_target_config_redacted(again);
    json_object_del(shown2, "revision");
    json_object_del(json_object_get(shown2, "target"), "password_set");
    json_object_del(json_object_get(shown2, "target"), "private_key_set");
    json_object_del(json_object_get(shown2, "upload"), "hmac_key_set");
    if (!shown2 || !json_equal(shown, shown2))
        abort();
    if ((c->password || again->password) &&
        (!c->password || !again->password || strcmp(c->password, again->password) != 0))
        abort();
    if ((c->upload_hmac_key || again->upload_hmac_key) &&
        (!c->upload_hmac_key || !again->upload_hmac_key ||
         strcmp(c->upload_hmac_key, again->upload_hmac_key) != 0))
        abort();
    json_decref(shown2);
    json_decref(shown);
    eg_free(text);
    eg_target_config_free(again);
    eg_target_config_free(c);
    return 0;
}

/* fuzz_rest.c - libFuzzer target for Exchange Online REST answers (exchange/rest_json): the
 * bytes as a result page (every value object converted to an eg_ps_value) and as an error body
 * classified under several HTTP statuses. Every classification must give one of the stable
 * codes and NUL-terminated, valid UTF-8 texts (they end up in console JSON). */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "exchange/rest_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_text(const char *s, size_t cap)
{
    if (!memchr(s, '\0', cap))
        abort();
    json_t *j = json_string(s); /* NULL for invalid UTF-8 */
    if (!j)
        abort();
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int initialised;
    static const char *const codes[] = {
        EG_BERR_INVALID_ARGUMENT,  EG_BERR_MAILBOX_NOT_FOUND, EG_BERR_DEVICE_NOT_FOUND,
        EG_BERR_PERMISSION_DENIED, EG_BERR_UNSUPPORTED,       EG_BERR_THROTTLED,
        EG_BERR_UNREACHABLE,       EG_BERR_TIMEOUT,           EG_BERR_INTERNAL};
    static const long statuses[] = {400, 403, 404, 408, 429, 500, 503, 504};
    if (!initialised) {
        eg_alloc_init();
        initialised = 1;
    }
    const char *body = (const char *)data;

    struct eg_rest_page page;
    if (eg_rest_parse_page(body, size, &page) == 0) {
        size_t i;
        json_t *o;
        json_array_foreach(page.values, i, o)
        {
            struct eg_ps_value *v = NULL;
            int rc = eg_rest_object_to_value(o, &v);
            if (rc == 0 && (!v || v->kind != EG_PS_OBJ))
                abort();
            eg_ps_value_free(v);
        }
        eg_rest_page_clear(&page);
    }

    for (size_t s = 0; s < sizeof statuses / sizeof statuses[0]; s++) {
        struct eg_rest_answer a = {.status = statuses[s],
                                   .retry_after = s % 2 ? "3" : NULL,
                                   .exception_type =
                                       s % 3 ? NULL : "ManagementObjectNotFoundException",
                                   .body = body,
                                   .body_len = size};
        struct eg_bridge_error err;
        memset(&err, 0x55, sizeof err);
        eg_rest_classify(&a, s % 2 ? EG_TARGET_DEVICE : EG_TARGET_MAILBOX, &err);
        bool known = false;
        for (size_t c = 0; c < sizeof codes / sizeof codes[0]; c++)
            known |= strcmp(err.code, codes[c]) == 0;
        if (!known || err.retry_after_ms < 0)
            abort();
        check_text(err.message, sizeof err.message);
        check_text(err.exchange_type, sizeof err.exchange_type);
        check_text(err.exchange_message, sizeof err.exchange_message);
    }
    return 0;
}

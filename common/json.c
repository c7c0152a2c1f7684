/* json.c - jansson helpers. */
#include "common/json.h"

int eg_json_load(const char *buf, size_t len, json_t **ret, json_error_t *jerr)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, jerr);
        if (root) {
            *ret = root;
            return 0;
        }
        enum json_error_code code = json_error_code(jerr);
        if (jerr->text[0] == '\0' || code == json_error_out_of_memory)
            return EG_ENOMEM;
        if (code != json_error_invalid_syntax && code != json_error_premature_end_of_input)
            break;
    }
    return EG_EPARSE;
}

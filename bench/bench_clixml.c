/* bench_clixml.c - CLIXML decode throughput on a large Get-MobileDevice output (issue 9).
 *
 * Builds the output of `Get-MobileDevice -ResultSize Unlimited` over a seeded mock org (the mock
 * Exchange's engine, tests/mock-exchange), encodes every object with eg_clixml_encode as the data
 * of one PSRP message (bare elements, one after another, as the pool hands them to the decoder),
 * then decodes the whole buffer with the streaming decoder in fixed-size chunks, several times.
 * Prints one JSON object: input size, objects, best and median MB/s and objects/s, and the peak
 * RSS before and during decoding (VmHWM, reset between the phases through /proc/self/clear_refs).
 *
 * usage: bench_clixml [--devices N] [--mailboxes M] [--chunk BYTES] [--rounds R] [--write FILE]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/error.h"
#include "engine.h"
#include "exchange/clixml.h"

struct buf {
    char *p;
    size_t len, cap;
    size_t objects;
};

struct decode_ctx {
    size_t objects;
    size_t with_id; /* objects whose DeviceId property was found (the consumer's first lookup) */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* VmHWM / VmRSS of this process in KiB, or -1. */
static long proc_status_kib(const char *key)
{
    char line[256];
    long v = -1;
    size_t klen = strlen(key);
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            v = strtol(line + klen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

static void reset_peak_rss(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

static int append(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1u << 20;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = eg_realloc(b->p, cap);
        if (!p)
            return EG_ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int on_object(void *ctx, struct eg_ps_value *obj)
{
    struct buf *b = ctx;
    char *xml = NULL;
    size_t xml_len = 0;
    int rc = eg_clixml_encode(obj, &xml, &xml_len);
    if (rc == 0)
        rc = append(b, xml, xml_len);
    if (rc == 0)
        b->objects++;
    eg_free(xml);
    eg_ps_value_free(obj);
    return rc;
}

static int on_decoded(void *userdata, const char *stream, struct eg_ps_value *value)
{
    struct decode_ctx *d = userdata;
    const char *id = NULL;
    (void)stream;
    d->objects++;
    if (eg_ps_get_string(eg_ps_obj_prop(value, "DeviceId"), &id, NULL) == 0 && id)
        d->with_id++;
    return 0;
}

static int decode_once(const struct buf *b, size_t chunk, struct decode_ctx *d, double *secs)
{
    struct eg_clixml_stream *s = NULL;
    double t0 = now_s();
    int rc = eg_clixml_stream_new(on_decoded, d, &s);
    for (size_t off = 0; rc == 0 && off < b->len; off += chunk) {
        size_t n = b->len - off < chunk ? b->len - off : chunk;
        rc = eg_clixml_stream_feed(s, b->p + off, n);
    }
    if (rc == 0)
        rc = eg_clixml_stream_finish(s);
    *secs = now_s() - t0;
    if (rc != 0 && s)
        fprintf(stderr, "bench_clixml: decode: %s: %s\n", eg_strerror(rc),
                eg_clixml_stream_errmsg(s));
    eg_clixml_stream_free(s);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int parse_size(const char *s, size_t *ret)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || !end || *end || v == 0)
        return EG_EINVAL;
    *ret = (size_t)v;
    return 0;
}

int main(int argc, char **argv)
{
    size_t devices = 200000, mailboxes = 0, chunk = 65536, rounds = 3;
    const char *write_path = NULL;
    struct mx_org *org = NULL;
    struct eg_ps_value *rs = NULL;
    struct buf b = {0};
    double *times = NULL;
    struct mx_error term;
    int rc = 0;

    eg_alloc_init();
    for (int i = 1; i < argc; i++) {
        size_t *dst = NULL;
        if (strcmp(argv[i], "--devices") == 0)
            dst = &devices;
        else if (strcmp(argv[i], "--mailboxes") == 0)
            dst = &mailboxes;
        else if (strcmp(argv[i], "--chunk") == 0)
            dst = &chunk;
        else if (strcmp(argv[i], "--rounds") == 0)
            dst = &rounds;
        else if (strcmp(argv[i], "--write") == 0 && i + 1 < argc) {
            write_path = argv[++i];
            continue;
        }
        if (!dst || i + 1 >= argc || parse_size(argv[++i], dst) != 0) {
            fprintf(stderr, "usage: bench_clixml [--devices N] [--mailboxes M] [--chunk BYTES] "
                            "[--rounds R] [--write FILE]\n");
            return 2;
        }
    }
    if (mailboxes == 0)
        mailboxes = devices / 4 ? devices / 4 : 1;

    /* ---- the input: Get-MobileDevice -ResultSize Unlimited, one message per object ---- */
    double t0 = now_s();
    struct mx_org_opts oo = {
        .profile = MX_PROFILE_2016, .seed = 1, .mailboxes = mailboxes, .devices = devices};
    rc = mx_org_new(&oo, &org);
    if (rc != 0)
        goto out;
    rs = eg_ps_new_string("Unlimited");
    if (!rs) {
        rc = EG_ENOMEM;
        goto out;
    }
    struct mx_param params[] = {{"ResultSize", rs}};
    struct mx_output_ops ops = {.object = on_object};
    memset(&term, 0, sizeof term);
    rc = mx_invoke(org, "Get-MobileDevice", params, 1, &ops, &b, &term);
    if (rc != 0) {
        fprintf(stderr, "bench_clixml: Get-MobileDevice: %s %s\n", eg_strerror(rc), term.message);
        goto out;
    }
    double gen_s = now_s() - t0;
    mx_org_free(org);
    org = NULL;
    if (write_path) {
        FILE *f = fopen(write_path, "wb");
        if (!f || fwrite(b.p, 1, b.len, f) != b.len) {
            fprintf(stderr, "bench_clixml: cannot write %s\n", write_path);
            if (f)
                fclose(f);
            rc = EG_EIO;
            goto out;
        }
        fclose(f);
    }
    long rss_input = proc_status_kib("VmRSS");
    long hwm_gen = proc_status_kib("VmHWM");

    /* ---- decode ---- */
    times = eg_calloc(rounds, sizeof *times);
    if (!times) {
        rc = EG_ENOMEM;
        goto out;
    }
    reset_peak_rss();
    struct decode_ctx d = {0};
    for (size_t r = 0; r < rounds; r++) {
        d = (struct decode_ctx){0};
        rc = decode_once(&b, chunk, &d, &times[r]);
        if (rc != 0)
            goto out;
        if (d.objects != b.objects || d.with_id != b.objects) {
            fprintf(stderr, "bench_clixml: decoded %zu objects (%zu with DeviceId), encoded %zu\n",
                    d.objects, d.with_id, b.objects);
            rc = EG_EPARSE;
            goto out;
        }
    }
    long hwm_decode = proc_status_kib("VmHWM");
    qsort(times, rounds, sizeof *times, cmp_double);
    double best = times[0], median = times[rounds / 2];
    double mb = (double)b.len / 1e6;
    printf("{\"devices\":%zu,\"mailboxes\":%zu,\"objects\":%zu,\"input_bytes\":%zu,"
           "\"bytes_per_object\":%.0f,\"chunk\":%zu,\"rounds\":%zu,\"generate_s\":%.3f,"
           "\"decode_best_s\":%.4f,\"decode_median_s\":%.4f,"
           "\"mb_per_s_best\":%.1f,\"mb_per_s_median\":%.1f,"
           "\"objects_per_s_best\":%.0f,\"objects_per_s_median\":%.0f,"
           "\"rss_with_input_kib\":%ld,\"peak_rss_generate_kib\":%ld,"
           "\"peak_rss_decode_kib\":%ld,\"decode_extra_kib\":%ld,\"live_values_after\":%zu}\n",
           devices, mailboxes, b.objects, b.len, (double)b.len / (double)b.objects, chunk, rounds,
           gen_s, best, median, mb / best, mb / median, (double)b.objects / best,
           (double)b.objects / median, rss_input, hwm_gen, hwm_decode,
           hwm_decode >= 0 && rss_input >= 0 ? hwm_decode - rss_input : -1L, eg_ps_live_values());

out:
    if (rc != 0)
        fprintf(stderr, "bench_clixml: %s\n", eg_strerror(rc));
    eg_free(times);
    eg_free(b.p);
    eg_ps_value_free(rs);
    mx_org_free(org);
    return rc == 0 ? 0 : 1;
}

/* api.h - the console API v1: the route table and thin handlers.
 *
 * Each handler parses (agent/command), calls the agent (queue, workers, metrics) and maps the
 * result to a status code. The route table in api.c is the one place that lists every endpoint.
 */
#ifndef EG_API_H
#define EG_API_H

#include <stdbool.h>
#include <stdint.h>

#include "agent/metrics.h"
#include "agent/inventory.h"
#include "agent/queue.h"
#include "agent/scheduler.h"
#include "agent/target.h"
#include "agent/uploader.h"
#include "agent/worker.h"
#include "transport/server.h"

struct eg_api {
    struct eg_queue *queue;
    struct eg_workers *workers;
    struct eg_metrics *metrics;
    struct eg_target *target;       /* the Exchange target: PUT/GET /api/v1/config, status */
    struct eg_uploader *uploader;   /* upload to the console: status, metrics, cancelled commands'
                                       results; NULL = none */
    struct eg_scheduler *scheduler; /* inventory syncs: POST /api/v1/inventory/sync, status,
                                       metrics; NULL = none (503) */
    struct eg_inventory *inventory; /* GET /api/v1/inventory; NULL = none (503) */
    const char *bridge_name;
    size_t max_batch;
    int64_t started_ms;
    volatile bool ready; /* readiness: false while starting or draining */
};

/* eg_http_handler for transport/server; ctx is a struct eg_api. */
void eg_api_handle(void *ctx, const struct eg_http_request *req, struct eg_http_response *resp);
/* eg_http_observer: counts answers the server gave itself. */
void eg_api_observe(void *ctx, const char *route, int status);

/* The public view of a command record, as GET /api/v1/commands/{id} shows it (also the payload
 * of its command.final upload record). New reference; NULL on allocation failure. */
json_t *eg_api_command_view(const struct eg_cmd_record *r);

/* Paths served without authentication. */
extern const char *const eg_api_public_paths[];

#endif

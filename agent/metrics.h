/* metrics.h - counters and histograms, rendered in the Prometheus text format (0.0.4).
 *
 * Exposed series:
 *   easgate_http_requests_total{route,status}      counter
 *   easgate_queue_depth{state}                      gauge (from the queue at scrape time)
 *   easgate_command_duration_seconds{type}          histogram, accept -> final state
 *   easgate_commands_finished_total{type,state}     counter
 *   easgate_bridge_calls_total{op,outcome}          counter
 * Thread-safe; recording is a short critical section without allocation on the hot path.
 */
#ifndef EG_METRICS_H
#define EG_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "agent/queue.h"
#include "common/error.h"

struct eg_metrics;

int eg_metrics_new(struct eg_metrics **ret) EG_MUST_CHECK;
void eg_metrics_free(struct eg_metrics *m);

/* route is a route template from the API's route table ("/api/v1/commands/{id}"), never a raw
 * path, so cardinality stays bounded. */
void eg_metrics_http(struct eg_metrics *m, const char *route, int status);
void eg_metrics_command_done(struct eg_metrics *m, const char *type, enum eg_cmd_state state,
                             double seconds);
void eg_metrics_bridge_call(struct eg_metrics *m, const char *op, const char *outcome);

/* Render all series; queue_counts may be NULL (gauge omitted). *ret is a new string (eg_free). */
int eg_metrics_render(struct eg_metrics *m, const int64_t queue_counts[EG_STATE__COUNT],
                      char **ret) EG_MUST_CHECK;

#endif

/*
 * example.h - what the example agents share: start-up (options, signals,
 * the agent), a loop that reports the agent's counters to a monitor every
 * quarter second, and a clean finish.  Each example is a short main over
 * bm_agent; this keeps the plumbing out of their way.
 *
 * Report ("stats.report" message, reliable): one "key value" per line —
 * name, pid, every bm_agent_stats counter, ack_hist / req_hist as sparse
 * "bucket:count,..." lists, then the example's own keys.
 */
#ifndef BM_EXAMPLE_H
#define BM_EXAMPLE_H

#include <signal.h>
#include <stddef.h>

#include "bm_agent.h"

extern volatile sig_atomic_t ex_stop; /* set by SIGINT/SIGTERM */

typedef struct ex_opts {
	const char *dir;        /* --dir: runtime dir */
	const char *name;       /* --name */
	const char *report_to;  /* --report-to: monitor agent, or NULL */
	int sync;               /* --sync always|interval|never */
} ex_opts_t;

/* Writes the example's own report keys ("key value\n"...) into buf. */
typedef void (*ex_extra_fn)(bm_agent_t *a, char *buf, size_t cap);

/* Takes --dir, --name, --report-to and --sync out of argv (the rest is
 * left in order, argv[0] first); returns the new argc.  --version prints
 * "beast-DEFAULT_NAME beastmesh VERSION" and exits 0. */
int ex_parse(int argc, char **argv, ex_opts_t *o, const char *default_name);
/* Signals, then bm_agent_open; prints why and returns NULL on failure. */
bm_agent_t *ex_open(const ex_opts_t *o, const char *const *caps);
/* Sends one report now. */
void ex_report(bm_agent_t *a, const ex_opts_t *o, ex_extra_fn extra);
/* Steps the agent until ex_stop (or bm_agent_stop), reporting. */
int ex_run(bm_agent_t *a, const ex_opts_t *o, ex_extra_fn extra);
/* Reports periodically; call often from a loop of one's own. */
void ex_tick(bm_agent_t *a, const ex_opts_t *o, ex_extra_fn extra);
/* Drains the outbox, sends the final report, drains again, destroys.
 * Returns 0 when nothing was left pending. */
int ex_finish(bm_agent_t **a, const ex_opts_t *o, ex_extra_fn extra);

#endif

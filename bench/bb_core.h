/*
 * bb_core.h - between beast-bench's main and its core (not for modules).
 */
#ifndef BB_CORE_H_INCLUDED
#define BB_CORE_H_INCLUDED

#include "bb.h"

/* Measures one row: the transport's run() when it takes the row, else the
 * generic driver of the row's scenario through the transport's ops. */
void bb_core_measure(const bb_transport_t *t, bb_row_t *r, bb_env_t *env);

/* SIGKILLs every side and server the core has forked and not yet reaped.
 * Async-signal-safe: main's SIGINT/SIGTERM handler calls it. */
void bb_core_kill_tracked(void);
/* Runs the command bb_core_on_signal_sh set, if any (async-signal-safe:
 * fork and exec).  Main's SIGINT/SIGTERM handler calls it. */
void bb_core_run_signal_sh(void);

#endif

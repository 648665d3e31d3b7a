/*
 * bb.h - the inside of beast-bench: rows, the environment a transport is
 * measured in, the operations a transport module provides, and the helpers
 * the core lends to modules.
 *
 * Shape of a run.  The core builds the matrix of rows (scenario, transport,
 * payload, placement, mode), then for each round and each (transport,
 * placement) group: up() starts the servers the transport needs (beastd,
 * nats-server, redis-server, iox-roudi, a forwarder...), every row of the
 * group is measured, down() stops them.  A group is (transport, placement,
 * scenario), so a server can be configured for the scenario.  Rows are repeated `rounds` times
 * with the transports interleaved, and the median round is reported.
 *
 * The core process never opens a zmq context, a NATS connection or any
 * other library state of a transport: every side of a measurement runs in
 * a child forked for it (bb_side_spawn), pinned by placement, and reports
 * back through a pipe.  So a fork never inherits a library's threads, and
 * each side's CPU time and peak RSS come from wait4() of that child.
 *
 * A module is one file, t_<name>.c, exporting one or more bb_transport_t.
 * It provides link operations (ops) that the core's generic drivers use
 * for latency (ping-pong), throughput (stream), bulk and fan-out, and/or
 * a run() that measures a scenario its own way (durable, reconnect, zero
 * copy...).  A peer that is not installed makes missing() return a reason:
 * its rows say "not installed: ...", never a failure.
 */
#ifndef BB_H_INCLUDED
#define BB_H_INCLUDED

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BB_DEADLINE_S 8.0 /* per measured side: a hard bound on every loop */

/* Scenario ids, in table order; bb_scen_name[] spells them for the JSON. */
enum {
	BB_LATENCY,
	BB_THROUGHPUT,
	BB_FANOUT1,
	BB_FANOUT8,
	BB_FANOUT32,
	BB_DURABLE,
	BB_BULK,
	BB_RECONNECT,
	BB_OVERLOAD,
	/* latency under a steady load: paced sends, measured from the intended
	 * send time (no coordinated omission); the core adds these rows for
	 * every transport with latency rows and point-to-point ops */
	BB_LATLOAD,
	BB_NSCEN
};
#define BB_S(s) (1u << (s))
extern const char *const bb_scen_name[BB_NSCEN];

/* Which process of a measurement a number belongs to. */
enum { BB_SIDE_TX, BB_SIDE_RX, BB_SIDE_SRV, BB_NSIDES };

typedef struct {
	int scen;
	char scenario[16];
	char transport[24];
	size_t payload;
	char placement[12]; /* cross-cpu, same-cpu, unpinned */
	char mode[12];      /* "" or a wait mode: blocking, spinning */
	char status[128];   /* ok, failed: ..., skipped: ..., not installed: ... */
	char note[96];      /* what the row measured, when not obvious */
	double p50_us, p90_us, p99_us, p999_us, max_us;
	double msgs_per_s, mb_per_s;
	double cpu_s;                /* all sides */
	double side_cpu_s[BB_NSIDES];
	long rss_kb;                 /* the largest side */
	long side_rss_kb[BB_NSIDES];
	long sent, lost;             /* counted: sent - received (fan-out: per subscriber, summed) */
	int rounds;                  /* rounds that gave a result */
	/* latency CDF for the plot: cdf[i] is the (i / (BB_CDF_N - 1)) quantile, µs */
#define BB_CDF_N 101
	double cdf[BB_CDF_N];
	int has_cdf;
} bb_row_t;

/* Where a group of rows runs.  CPUs are -1 when not pinned. */
typedef struct {
	const char *dir;       /* scratch dir of this run (sockets, journals, server files), 0700 */
	int quick;
	int cpu_tx, cpu_rx, cpu_srv;
	const char *placement;
	int scen;              /* the group's scenario: a server may be sized by it */
	const char *beastd;    /* path of the beastd to start */
#define BB_MAX_SRV 8
	pid_t srv_pid[BB_MAX_SRV]; /* servers up() started: sampled for CPU/RSS, stopped by the core if left */
	int nsrv;
	char ep[BB_MAX_SRV][256];  /* what up() wants its links to know (endpoints, dirs, ports) */
	void *priv;                /* module state for the group (parent side) */
} bb_env_t;

/* Probes ('P') are ignored by point-to-point receivers; a module may use
 * them to learn that a path is up. */

/* One side's handle on a link; the module owns what impl points to.  The
 * core fills scen and payload before serve/dial/sub/pub: a module may size
 * its queues by them (fan-out rows want every message kept; overload rows
 * want the transport's ordinary limits, so that drops show). */
typedef struct {
	void *ctx, *sock;
	int fd;
	void *impl;
	int scen;
	size_t payload;
	char peer[256];
} bb_link_t;

/* The generic drivers tag byte 0 of every message (payloads are >= 64 B)
 * and, for bulk and latency-load, stamp a bb_now() time as a double at
 * bytes 8..15; a transport
 * must deliver the bytes as sent. */
enum { BB_TAG_PROBE = 'P', BB_TAG_DATA = 'D', BB_TAG_END = 'E', BB_TAG_ACK = 'A' };

typedef struct {
	/* Point to point (latency, throughput, bulk).  The receiver side, in
	 * its own child, serves and writes into ep what the sender needs to
	 * reach it (an endpoint, a name, a subject); accept() (may be NULL)
	 * runs once ep has gone to the sender.  The sender dials ep. */
	int (*serve)(bb_link_t *l, const bb_env_t *env, char *ep, size_t eplen);
	int (*accept)(bb_link_t *l, const bb_env_t *env);
	int (*dial)(bb_link_t *l, const bb_env_t *env, const char *ep);
	/* Fan-out (fanout-N, overload): a subscriber to every message of the
	 * run, and the publisher.  NULL when the transport has no fan-out. */
	int (*sub)(bb_link_t *l, const bb_env_t *env);
	int (*pub)(bb_link_t *l, const bb_env_t *env);
	/* Sends one message.  On a ping-pong receiver, send() answers whoever
	 * sent the last message received.  0 or -1. */
	int (*send)(bb_link_t *l, const void *buf, size_t len);
	/* Receives one message into buf (cap bytes): its length, or -1 on an
	 * error or after timeout_ms without one. */
	long (*recv)(bb_link_t *l, void *buf, size_t cap, int timeout_ms);
	void (*close)(bb_link_t *l);
} bb_ops_t;

typedef struct {
	const char *id;     /* stable id in the JSON: "zmq-dealer-ipc", "nats", ... */
	const char *about;  /* one line for --list */
	unsigned scens;     /* BB_S(BB_LATENCY) | ... */
	const char *const *modes; /* NULL, or wait modes measured as separate rows */
	/* NULL when usable, else why not ("not installed: nats-server"). */
	const char *(*missing)(void);
	/* Start / stop what the group needs (NULL: nothing).  up() returns 0,
	 * or -1 with a reason in why (the group's rows then fail with it).
	 * After down() the core stops every server still in env->srv_pid, so
	 * a module that only starts servers (bb_server_up) needs no down(). */
	int (*up)(bb_env_t *env, char *why, size_t whylen);
	void (*down)(bb_env_t *env);
	/* Payloads this transport cannot carry in a scenario: a reason, or NULL. */
	const char *(*refuse)(int scen, size_t payload);
	const bb_ops_t *ops;
	/* Measures a row its own way; returns 1 when it did (the row is
	 * filled: status "ok" or "failed: ..."), 0 to let the generic driver
	 * measure it through ops. */
	int (*run)(bb_row_t *r, bb_env_t *env);
} bb_transport_t;

#define BB_LATLOAD_RATE 20000 /* messages per second of a latency-load row */

/* ---- what the core lends modules ---- */

/* How many messages a row measures, one rule for every module so rows
 * compare: latency, `warm` unmeasured round trips then `n` samples (100
 * from 1 MiB up); bulk, `n` blobs (3 from 64 MiB up); throughput, 256 MiB
 * worth, at least 8, at most 50,000 (quick) or 1,000,000; durable, n
 * sends; latency-load, n paced sends (2 s at BB_LATLOAD_RATE, a quarter
 * second quick); fan-out and overload, n publishes (a quarter of it to 32
 * subscribers). */
typedef struct {
	long warm; /* round trips before the measured ones (latency) */
	long n;    /* messages (or blobs) measured */
} bb_counts_t;
bb_counts_t bb_counts(const bb_env_t *env, int scen, size_t payload);

double bb_now(void); /* CLOCK_MONOTONIC, seconds; the same clock in every process */
void bb_pin(int cpu); /* -1: leaves affinity alone */
void bb_fail(bb_row_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Fills p50..max (and the CDF) from n latency samples in µs (sorts them). */
void bb_latency_stats(bb_row_t *r, double *us, int n);

/* A side: fn(arg, wfd) runs in a child pinned to cpu; what it writes to
 * wfd the parent reads from *rfd; its return value is the exit status. */
pid_t bb_side_spawn(int cpu, int (*fn)(void *arg, int wfd), void *arg, int *rfd);
/* Waits up to timeout_s for the side to exit (then SIGKILL), adds its CPU
 * time and peak RSS to the row under side; 0 when it exited with 0. */
int bb_side_reap(pid_t pid, double timeout_s, bb_row_t *r, int side);
/* For a module's own run(): a side child fills a bb_row_t (status "ok" or
 * "failed: ...", the metrics it measured, a note) and sends it with
 * bb_side_result(); the parent takes it with bb_side_collect(), which
 * waits up to timeout_s for it, reaps the side (CPU, RSS under side) and
 * copies status, percentiles, CDF, rates, sent, lost and note into r. */
int bb_side_result(int wfd, bb_row_t *mine);
int bb_side_collect(pid_t pid, int rfd, double timeout_s, bb_row_t *r, int side);
/* Reads exactly len bytes before the deadline (bb_now() based): 0 or -1. */
int bb_read_full(int fd, void *buf, size_t len, double deadline);
int bb_write_full(int fd, const void *buf, size_t len);

/* A server: fork + exec argv, pinned to cpu, PR_SET_PDEATHSIG, stdout and
 * stderr to logpath (or /dev/null when NULL); its pid, or -1. */
pid_t bb_server_spawn(char *const argv[], int cpu, const char *logpath);
/* SIGTERM, up to 3 s to exit, then SIGKILL; reaped.  pid <= 0: nothing. */
void bb_server_stop(pid_t pid);
/* Polls until connect() to a TCP port on 127.0.0.1 (or a Unix socket
 * path when port is 0) succeeds, or timeout_s passes: 0 or -1. */
int bb_wait_listen(int port, const char *path, double timeout_s);
/* When a server counts as started: it accepts on 127.0.0.1:port (port >
 * 0), else on the Unix stream socket sock, else the file exists (then
 * settle_s more: iox-roudi makes its segment before it listens). */
typedef struct {
	int port;
	const char *sock;
	const char *file;
	double settle_s;
	double timeout_s; /* give up after this */
} bb_ready_t;
/* bb_server_spawn pinned to env->cpu_srv, logging to DIR/logname, then
 * waits until ready: its pid, or -1 (it is stopped). */
pid_t bb_server_start(const bb_env_t *env, char *const argv[], const char *logname,
                      const bb_ready_t *ready);
/* The same, and the pid goes into env->srv_pid: the core samples its CPU
 * and RSS and stops it after the group (a module needs no down() for it).
 * 0, or -1 with why (naming the log). */
int bb_server_up(bb_env_t *env, char *const argv[], const char *logname, const bb_ready_t *ready,
                 char *why, size_t whylen);
/* A shell command that undoes what a group made outside its scratch dir
 * (network namespaces): a SIGINT/SIGTERM of the bench runs it after
 * killing the sides and servers.  NULL clears it.  Up to 511 bytes. */
void bb_core_on_signal_sh(const char *cmd);
/* A free TCP port on 127.0.0.1 (bound and released), or -1. */
int bb_free_port(void);
/* Finds a program on PATH or in the usual sbin dirs: its path in out, 0 or -1. */
int bb_find_program(const char *name, char *out, size_t outlen);

/* ---- the transports (one table, in bb_table.c) ---- */
extern const bb_transport_t *const bb_transports[];

#endif

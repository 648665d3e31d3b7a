/*
 * chaos_soak.c - the swarm under fire, and the proof that nothing was lost.
 *
 *   chaos-soak [--seconds N] [--senders S] [--receivers R] [--rate MSGS]
 *              [--seed X] [--keep] [--direct]
 *
 * Starts beastd, R receivers and S senders (this same program, re-executed
 * with --role) in a private scratch directory.  Each sender puts messages
 * "s<i>:<seq>" through its durable outbox (fsync'd journal, retries) to
 * receiver seq % R at a steady rate, with the message id derived from
 * (sender, seq), and appends seq to its ledger once the put is committed.
 * Each receiver de-duplicates by id and stores the body as the mark's note
 * (atomically with the mark) before it ACKs.  Meanwhile the harness, at
 * random (seeded; the seed is printed):
 *   - kill -9s a sender, a receiver or beastd and starts it again,
 *   - stalls a receiver (SIGSTOP, then SIGCONT up to a second later),
 *   - fills the disk of sender 0's journal: it runs under a 32 KiB
 *     file-size limit until a journal write fails (EFBIG, as a full disk
 *     fails with ENOSPC; no privileges needed, unlike a tiny filesystem);
 *     it must say so and exit 5, and its next life, with room again,
 *     recovers the journal and goes on.
 * At the end the senders drain their outboxes, and the ledgers are
 * compared: every sequence number a sender committed must be a note at its
 * receiver exactly once.  One line says: messages, kills, restarts,
 * stalls, disk-full, lost, duplicated.  Exit 0 only when lost and
 * duplicated are 0.  Every process, socket and file is gone afterwards
 * (--keep keeps the scratch directory).
 *
 * --direct: senders and receivers offer direct shared-memory routes
 * (BEAST_DIRECT=1; without --direct BEAST_DIRECT=0, the broker path
 * only), so most messages and ACKs travel rings between them while they
 * are killed; each sender's last life writes how many messages
 * it sent over routes, and the run fails if none did.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bm_mesh.h"
#include "bm_shm.h"

#ifndef BM_BEASTD_PATH
#define BM_BEASTD_PATH "beastd"
#endif

#define S_MAX 16
#define S_HB 200
#define S_DISK_KIB 32 /* sender 0's file-size limit while its disk is "full" */

static char s_root[64], s_run[96], s_state[96], s_stopfile[128];
static int s_senders = 3, s_receivers = 2, s_rate = 100;
static volatile sig_atomic_t s_term;
static bool s_direct; /* --direct */

static void
s_on_term(int sig)
{
	(void)sig;
	s_term = 1;
}

static char *
s_path(char *out, size_t cap, const char *who, const char *what)
{
	snprintf(out, cap, "%s/%s/%s", s_state, who, what);
	return out;
}

static void
s_msg_id(int sender, uint64_t seq, bm_id_t *id)
{
	memset(id, 0, sizeof *id);
	id->b[0] = 0xC4;
	id->b[1] = (uint8_t)sender;
	for (int i = 0; i < 8; i++) {
		id->b[8 + i] = (uint8_t)(seq >> (56 - 8 * i));
	}
}

/* ---- roles (each its own process) ---- */

static bm_client_t *
s_client(const char *name)
{
	bm_client_opts_t o = {.dir = s_run, .name = name, .heartbeat_ms = S_HB};
	bm_client_t *c = NULL;

	/* beastd may be down for a moment: keep trying (bounded). */
	for (int i = 0; i < 3000 && !s_term; i++) {
		if (bm_client_open(&o, &c) == 0) {
			return c;
		}
		usleep(10000);
	}
	return NULL;
}

static int
s_sender(int i)
{
	char name[16], dir[256], ledger[256], body[64], to[16], line[32];
	bm_outbox_opts_t oo = {.sync = BM_JOURNAL_SYNC_ALWAYS, .segment_size = 1 << 20,
	                       .base_ms = 20, .cap_ms = 500, .max_attempts = 1000000,
	                       .ack_timeout_ms = 1000, .window = 256};
	bm_client_t *c;
	bm_outbox_t *ob = NULL;
	uint64_t next = 0;
	int64_t due, gap_ms = 1000 / s_rate, deadline;
	FILE *f;
	int lfd, rc, status;

	snprintf(name, sizeof name, "s%d", i);
	mkdir(s_path(dir, sizeof dir, name, ""), 0700);
	/* Where we are: the last committed seq in the ledger. */
	if ((f = fopen(s_path(ledger, sizeof ledger, name, "ledger"), "r")) != NULL) {
		while (fgets(line, sizeof line, f) != NULL) {
			next = strtoull(line, NULL, 10) + 1;
		}
		fclose(f);
	}
	if ((c = s_client(name)) == NULL) {
		return 2;
	}
	oo.dir = s_path(dir, sizeof dir, name, "outbox");
	oo.client = c;
	if ((rc = bm_outbox_open(&oo, &ob)) < 0) {
		fprintf(stderr, "sender %s: journal: %s\n", name, bm_strerror(rc));
		bm_client_destroy(&c);
		return rc == -EFBIG || rc == -ENOSPC ? 5 : 3;
	}
	lfd = open(ledger, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (lfd < 0) {
		status = 3;
		goto out;
	}
	due = bm_mono_ms();
	while (!s_term && access(s_stopfile, F_OK) != 0) {
		bm_event_t ev;

		if (bm_mono_ms() >= due) {
			bm_outbox_send_opts_t so = {.to = to, .type = "chaos"};
			bm_id_t id;
			int n;

			s_msg_id(i, next, &id);
			so.id = &id;
			snprintf(to, sizeof to, "r%d", (int)(next % (uint64_t)s_receivers));
			n = snprintf(body, sizeof body, "s%d:%llu", i, (unsigned long long)next);
			rc = bm_outbox_put(ob, &so, body, (size_t)n, NULL);
			if (rc == 0 || rc == -EEXIST) {
				rc = bm_outbox_commit(ob);
			}
			if (rc < 0) {
				int jerr = bm_journal_error(bm_outbox_journal(ob));

				fprintf(stderr, "sender %s: cannot store message %llu: %s (%s)\n", name,
				        (unsigned long long)next, bm_strerror(rc),
				        jerr ? bm_strerror(jerr) : "-");
				status = jerr == -EFBIG || jerr == -ENOSPC ? 5 : 4;
				goto out;
			}
			n = snprintf(line, sizeof line, "%llu\n", (unsigned long long)next);
			if (write(lfd, line, (size_t)n) != n) {
				status = 4;
				goto out;
			}
			next++;
			due += gap_ms;
		}
		(void)bm_outbox_pump(ob);
		if (bm_client_recv(c, 5, &ev) == 0) {
			do {
				(void)bm_outbox_handle(ob, &ev);
				bm_event_clear(&ev);
			} while (bm_client_recv(c, 0, &ev) == 0);
		}
	}
	/* Drain: everything stored must be ACKed (bounded). */
	deadline = bm_mono_ms() + 120000;
	while (!s_term && bm_outbox_count(ob) > 0 && bm_mono_ms() < deadline) {
		(void)bm_outbox_run(ob, 200);
	}
	status = bm_outbox_count(ob) == 0 ? 0 : 6;
	{
		/* How many went over direct routes in this (last) life. */
		bm_direct_stats_t ds;
		char path[256];
		FILE *df;

		bm_client_direct_stats(c, &ds);
		if ((df = fopen(s_path(path, sizeof path, name, "direct"), "a")) != NULL) {
			fprintf(df, "%llu\n", (unsigned long long)ds.sent);
			fclose(df);
		}
	}
out:
	if (lfd >= 0) {
		close(lfd);
	}
	bm_outbox_destroy(&ob);
	bm_client_destroy(&c);
	return status;
}

static int
s_receiver(int j)
{
	char name[16], dir[256];
	bm_dedup_opts_t dopt = {.window = 1 << 20};
	bm_dedup_t *d = NULL;
	bm_client_t *c;
	bm_msg_t *batch[512];
	int status = 0;

	snprintf(name, sizeof name, "r%d", j);
	mkdir(s_path(dir, sizeof dir, name, ""), 0700);
	if (bm_dedup_open(s_path(dir, sizeof dir, name, "dedup"), &dopt, &d) < 0) {
		return 2;
	}
	if ((c = s_client(name)) == NULL) {
		bm_dedup_destroy(&d);
		return 3;
	}
	while (!s_term) {
		int n = 0;
		bm_event_t ev;
		int rc = bm_client_recv(c, 100, &ev);

		while (rc == 0) {
			if (ev.kind == BM_EV_MESSAGE) {
				bm_msg_t *m = ev.msg;

				ev.msg = NULL;
				batch[n++] = m;
				if (bm_dedup_seen(d, m->from, &m->id) == 0 &&
				    bm_dedup_mark(d, m->from, &m->id, bm_msg_data(m), bm_msg_size(m)) < 0) {
					status = 4;
				}
			}
			bm_event_clear(&ev);
			if (n == 512 || status != 0) {
				break;
			}
			rc = bm_client_recv(c, 0, &ev);
		}
		/* The notes are stored before any of these is ACKed. */
		if (status == 0 && n > 0 && bm_dedup_commit(d) < 0) {
			status = 5;
		}
		if (status != 0) {
			for (int i = 0; i < n; i++) {
				bm_msg_destroy(&batch[i]);
			}
			break;
		}
		for (int i = 0; i < n; i++) {
			(void)bm_client_ack(c, batch[i]);
			bm_msg_destroy(&batch[i]);
		}
	}
	bm_client_destroy(&c);
	bm_dedup_destroy(&d);
	return status;
}

/* ---- blobs: a producer and a consumer over the bulk channel ---- */

#define S_BLOB_NAME "chaos-blobs"

/* Blob k's bytes: its size varies (some stream through the ring, some go
 * as a sealed memfd) and its content is a function of k alone. */
static size_t
s_blob_size(uint64_t k)
{
	return (size_t)(4096 + (k * 7919) % (3u << 20));
}

static void
s_blob_fill(uint64_t k, uint8_t *p, size_t n)
{
	uint64_t x = k * 0x9E3779B97F4A7C15ull + 1;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)x;
	}
}

static int
s_blob_sender(void)
{
	char dir[256], ledger[256], line[32], name[32];
	bm_channel_opts_t co = {.capacity = 1 << 20};
	bm_channel_t *ch = NULL;
	uint64_t k = 0;
	uint8_t *buf = malloc(s_blob_size(0) + (3u << 20));
	FILE *f;
	int lfd;

	mkdir(s_path(dir, sizeof dir, "bs", ""), 0700);
	if ((f = fopen(s_path(ledger, sizeof ledger, "bs", "ledger"), "r")) != NULL) {
		while (fgets(line, sizeof line, f) != NULL) {
			k = strtoull(line, NULL, 10) + 1;
		}
		fclose(f);
	}
	lfd = open(ledger, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (buf == NULL || lfd < 0) {
		return 2;
	}
	while (!s_term && access(s_stopfile, F_OK) != 0) {
		size_t n = s_blob_size(k);
		bm_blob_opts_t bo = {.name = name, .flags = BM_BLOB_CHECKSUM};
		int64_t id;
		int rc, len;

		if (ch == NULL && bm_channel_connect(s_run, S_BLOB_NAME, "bs", &co, 1000, &ch) < 0) {
			ch = NULL;
			usleep(50000);
			continue;
		}
		snprintf(name, sizeof name, "blob-%llu", (unsigned long long)k);
		s_blob_fill(k, buf, n);
		id = bm_blob_send(ch, buf, n, &bo, 5000);
		rc = id < 0 ? (int)id : bm_blob_wait(ch, (uint64_t)id, 5000);
		if (rc < 0) {
			/* The consumer died or stalled too long: reconnect and send
			 * the same blob again.  Only a confirmed blob is ledgered. */
			bm_channel_destroy(&ch);
			continue;
		}
		len = snprintf(line, sizeof line, "%llu\n", (unsigned long long)k);
		if (write(lfd, line, (size_t)len) != len) {
			return 3;
		}
		k++;
		usleep(100000);
	}
	bm_channel_destroy(&ch);
	close(lfd);
	free(buf);
	return 0;
}

/*
 * bm_blob_recv() confirms a blob to its producer as it returns it, so a
 * consumer killed before it has handled the blob loses it (the producer
 * counts it delivered).  A consumer that must not lose one does what this
 * one does: it receives into a file with bm_blob_recv_fd(), which confirms
 * only once every byte is written, and after a restart it salvages a blob
 * left whole in that file.  Blobs come in order and the producer moves on
 * only after a confirmation, so a blob left there is the one after the last
 * it ledgered (or that one again).
 */
static void
s_blob_ledger(int lfd, const char *name, size_t size, uint32_t crc)
{
	char line[128];
	int len = snprintf(line, sizeof line, "%s %zu %08x\n", name, size, crc);

	if (write(lfd, line, (size_t)len) != len) {
		_exit(3);
	}
}

static void
s_blob_salvage(const char *in_path, const char *ledger, int lfd)
{
	char line[128], name[32];
	unsigned long long last = 0;
	bool any = false;
	struct stat st;
	uint8_t *got, *want;
	FILE *f;
	int fd = open(in_path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		return;
	}
	if ((f = fopen(ledger, "r")) != NULL) {
		while (fgets(line, sizeof line, f) != NULL) {
			any = sscanf(line, "blob-%llu", &last) == 1 || any;
		}
		fclose(f);
	}
	if (fstat(fd, &st) == 0 && st.st_size > 0 &&
	    (got = malloc((size_t)st.st_size)) != NULL) {
		if ((want = malloc((size_t)st.st_size)) != NULL &&
		    read(fd, got, (size_t)st.st_size) == st.st_size) {
			for (uint64_t k = any ? last : 0; k <= (any ? last + 1 : 0); k++) {
				if (s_blob_size(k) != (size_t)st.st_size) {
					continue;
				}
				s_blob_fill(k, want, (size_t)st.st_size);
				if (memcmp(got, want, (size_t)st.st_size) == 0) {
					snprintf(name, sizeof name, "blob-%llu", (unsigned long long)k);
					s_blob_ledger(lfd, name, (size_t)st.st_size,
					              bm_crc32c(0, got, (size_t)st.st_size));
					fprintf(stderr, "blob receiver: %s was left whole in %s: "
					        "ledgered now\n", name, in_path);
				}
			}
		}
		free(want);
		free(got);
	}
	close(fd);
	unlink(in_path); /* partial (never confirmed) or ledgered now */
}

static int
s_blob_receiver(void)
{
	char dir[256], ledger[256], in_path[256];
	bm_listener_t *l = NULL;
	bm_channel_t *ch = NULL;
	int lfd;

	mkdir(s_path(dir, sizeof dir, "br", ""), 0700);
	s_path(in_path, sizeof in_path, "br", "incoming");
	lfd = open(s_path(ledger, sizeof ledger, "br", "ledger"),
	           O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (lfd < 0 || bm_listener_open(s_run, S_BLOB_NAME, &l) < 0) {
		return 2;
	}
	s_blob_salvage(in_path, ledger, lfd);
	while (!s_term) {
		bm_blob_info_t info;
		int fd, rc;

		if (ch == NULL && bm_listener_accept(l, 200, NULL, &ch) < 0) {
			ch = NULL;
			continue;
		}
		fd = open(in_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0) {
			return 3;
		}
		rc = bm_blob_recv_fd(ch, fd, 200, &info);
		close(fd);
		if (rc == -ETIMEDOUT) {
			continue;
		}
		if (rc == 0) {
			/* Written whole, checksum verified, confirmed: ledger what
			 * the file holds, for the harness to check against k. */
			uint8_t *buf = malloc(info.size > 0 ? (size_t)info.size : 1);
			uint32_t crc = 0;

			fd = open(in_path, O_RDONLY | O_CLOEXEC);
			if (buf == NULL || fd < 0 ||
			    read(fd, buf, (size_t)info.size) != (ssize_t)info.size) {
				return 3;
			}
			close(fd);
			crc = bm_crc32c(0, buf, (size_t)info.size);
			free(buf);
			s_blob_ledger(lfd, info.name, (size_t)info.size, crc);
			unlink(in_path);
		} else if (rc != BM_ECORRUPT) {
			bm_channel_destroy(&ch); /* the producer is gone: next one */
		}
	}
	bm_channel_destroy(&ch);
	bm_listener_destroy(&l);
	close(lfd);
	return 0;
}

/* ---- the harness ---- */

typedef struct {
	char role[12]; /* beastd, sender, receiver, bsender, breceiver, done */
	int index;
	pid_t pid;     /* 0 when not running */
	bool stopped;  /* SIGSTOP'd by us */
	int64_t due;   /* restart or SIGCONT at (mono ms), 0 = none */
} s_kid_t;

static s_kid_t s_kids[3 + 2 * S_MAX];
static int s_nkids;
static const char *s_self;

static pid_t
s_spawn(s_kid_t *k, bool disk_limit)
{
	pid_t parent = getpid(), pid = fork();

	if (pid == 0) {
		char idx[16];

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent) {
			_exit(1);
		}
		if (disk_limit) {
			struct rlimit rl = {S_DISK_KIB << 10, S_DISK_KIB << 10};

			signal(SIGXFSZ, SIG_IGN); /* a failed write, not a signal */
			setrlimit(RLIMIT_FSIZE, &rl);
		}
		snprintf(idx, sizeof idx, "%d", k->index);
		if (strcmp(k->role, "beastd") == 0) {
			char hb[16];

			snprintf(hb, sizeof hb, "%d", S_HB);
			execl(BM_BEASTD_PATH, "beastd", "--dir", s_run, "--heartbeat", hb, (char *)NULL);
		} else {
			char nr[16], rate[16];

			snprintf(nr, sizeof nr, "%d", s_receivers);
			snprintf(rate, sizeof rate, "%d", s_rate);
			execl(s_self, s_self, "--role", k->role, "--index", idx, "--root", s_root,
			      "--receivers", nr, "--rate", rate, (char *)NULL);
		}
		_exit(127);
	}
	k->pid = pid > 0 ? pid : 0;
	k->stopped = false;
	k->due = 0;
	return pid;
}

typedef struct {
	int sender;     /* whose notes these are */
	uint8_t *count; /* per seq */
	uint64_t n;
} s_tally_t;

static s_tally_t s_tally[S_MAX];
static uint64_t s_bad_notes;

static int
s_note(void *arg, const char *from, const bm_id_t *id, const void *note, size_t len)
{
	char buf[64];
	int sender;
	unsigned long long seq;

	(void)arg;
	(void)from;
	(void)id;
	snprintf(buf, sizeof buf, "%.*s", (int)(len < 63 ? len : 63), (const char *)note);
	if (sscanf(buf, "s%d:%llu", &sender, &seq) != 2 || sender < 0 || sender >= s_senders ||
	    seq >= s_tally[sender].n) {
		s_bad_notes++;
		return 0;
	}
	if (s_tally[sender].count[seq] < 255) {
		s_tally[sender].count[seq]++;
	}
	return 0;
}

/* Every blob the producer saw confirmed is in the consumer's ledger, with
 * the size and checksum blob k must have. */
static void
s_check_blobs(uint64_t *ret_n, uint64_t *ret_lost, uint64_t *ret_bad)
{
	char p[256], line[128];
	uint64_t confirmed = 0;
	uint8_t *seen, *buf = malloc(4096 + (3u << 20));
	FILE *f;

	*ret_n = *ret_lost = *ret_bad = 0;
	if ((f = fopen(s_path(p, sizeof p, "bs", "ledger"), "r")) != NULL) {
		while (fgets(line, sizeof line, f) != NULL) {
			confirmed = strtoull(line, NULL, 10) + 1;
		}
		fclose(f);
	}
	seen = calloc(confirmed + 1, 1);
	if ((f = fopen(s_path(p, sizeof p, "br", "ledger"), "r")) != NULL) {
		while (fgets(line, sizeof line, f) != NULL) {
			unsigned long long k;
			size_t size;
			unsigned crc;

			if (sscanf(line, "blob-%llu %zu %x", &k, &size, &crc) != 3) {
				(*ret_bad)++;
				continue;
			}
			if (buf == NULL || size != s_blob_size(k)) {
				(*ret_bad)++;
				continue;
			}
			s_blob_fill(k, buf, size);
			if (crc != bm_crc32c(0, buf, size)) {
				(*ret_bad)++;
			} else if (k < confirmed) {
				seen[k] = 1;
			}
		}
		fclose(f);
	}
	for (uint64_t k = 0; k < confirmed; k++) {
		*ret_lost += seen[k] == 0;
	}
	*ret_n = confirmed;
	free(seen);
	free(buf);
}

static int
s_harness(int seconds, unsigned seed, bool keep)
{
	int64_t t0 = bm_mono_ms(), t_end = t0 + (int64_t)seconds * 1000, next_act;
	uint64_t kills = 0, restarts = 0, stalls = 0, diskfull = 0, messages = 0, lost = 0,
	         dup = 0, ledgered[S_MAX] = {0}, blobs = 0, blobs_lost = 0, blobs_bad = 0,
	         direct = 0;
	bool limited_once = false;
	int status = 0;

	snprintf(s_root, sizeof s_root, "/tmp/bmchaos.XXXXXX");
	if (mkdtemp(s_root) == NULL) {
		perror("chaos-soak: mkdtemp");
		return 2;
	}
	snprintf(s_run, sizeof s_run, "%s/run", s_root);
	snprintf(s_state, sizeof s_state, "%s/state", s_root);
	snprintf(s_stopfile, sizeof s_stopfile, "%s/stop", s_root);
	mkdir(s_run, 0700);
	mkdir(s_state, 0700);
	printf("chaos-soak: %d s, %d senders x %d msgs/s, %d receivers, seed %u, in %s%s\n", seconds,
	       s_senders, s_rate, s_receivers, seed, s_root, s_direct ? ", direct routes on" : "");
	/* Every role inherits it: the broker path, or direct routes. */
	setenv("BEAST_DIRECT", s_direct ? "1" : "0", 1);
	printf("chaos-soak: full disk by RLIMIT_FSIZE (%d KiB) on sender s0's journal, "
	       "not a small filesystem\n", S_DISK_KIB);
	fflush(stdout);
	srand(seed);
	s_kids[s_nkids++] = (s_kid_t){.role = "beastd"};
	for (int j = 0; j < s_receivers; j++) {
		s_kids[s_nkids++] = (s_kid_t){.role = "receiver", .index = j};
	}
	for (int i = 0; i < s_senders; i++) {
		s_kids[s_nkids++] = (s_kid_t){.role = "sender", .index = i};
	}
	s_kids[s_nkids++] = (s_kid_t){.role = "breceiver"};
	s_kids[s_nkids++] = (s_kid_t){.role = "bsender"};
	for (int k = 0; k < s_nkids; k++) {
		bool limit = strcmp(s_kids[k].role, "sender") == 0 && s_kids[k].index == 0;

		limited_once = limited_once || limit;
		s_spawn(&s_kids[k], limit);
		if (k == 0) {
			usleep(300000); /* beastd first */
		}
	}
	next_act = bm_mono_ms() + 500;
	/* Chaos until t_end, then let the senders drain (bounded). */
	for (bool stopping = false; !s_term;) {
		int64_t now = bm_mono_ms();
		bool senders_alive = false;

		for (int k = 0; k < s_nkids; k++) {
			s_kid_t *kid = &s_kids[k];
			int st;

			if (kid->pid > 0 && waitpid(kid->pid, &st, WNOHANG) == kid->pid) {
				int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);

				kid->pid = 0;
				if (strcmp(kid->role, "sender") == 0 && code == 5) {
					diskfull++; /* it said why on stderr; room again now */
					kid->due = now + 100;
				} else if ((strcmp(kid->role, "sender") == 0 ||
				            strcmp(kid->role, "bsender") == 0) && code == 0 && stopping) {
					kid->due = 0; /* drained: done */
					strcpy(kid->role, "done");
				} else {
					fprintf(stderr, "chaos-soak: %s %d exited %d unexpectedly\n", kid->role,
					        kid->index, code);
					status = 1;
					kid->due = now + 100;
				}
			}
			if (kid->due > 0 && now >= kid->due) {
				if (kid->stopped) {
					kill(kid->pid, SIGCONT);
					kid->stopped = false;
					kid->due = 0;
				} else if (kid->pid == 0 && strcmp(kid->role, "done") != 0) {
					/* Sender 0 lives under the limit until it has hit it. */
					s_spawn(kid, !stopping && diskfull == 0 &&
					                 strcmp(kid->role, "sender") == 0 && kid->index == 0);
					restarts++;
				}
			}
			senders_alive = senders_alive || strcmp(kid->role, "sender") == 0 ||
			                strcmp(kid->role, "bsender") == 0;
		}
		if (!stopping && now >= t_end) {
			/* No more chaos: wake everyone, ask the senders to drain. */
			for (int k = 0; k < s_nkids; k++) {
				if (s_kids[k].stopped) {
					kill(s_kids[k].pid, SIGCONT);
					s_kids[k].stopped = false;
				}
				if (s_kids[k].pid == 0 && s_kids[k].due == 0) {
					s_kids[k].due = now;
				}
			}
			close(open(s_stopfile, O_WRONLY | O_CREAT, 0600));
			stopping = true;
		}
		if (stopping && !senders_alive) {
			break;
		}
		if (stopping && now >= t_end + 180000) {
			fprintf(stderr, "chaos-soak: senders did not drain in 180 s\n");
			status = 1;
			break;
		}
		if (!stopping && now >= next_act) {
			int r = rand() % 100, k;
			s_kid_t *kid;

			if (r < 15) {
				k = 0; /* beastd */
			} else if (r < 50) {
				k = 1 + s_receivers + rand() % s_senders;
			} else if (r < 65) {
				k = s_nkids - 2 + rand() % 2; /* the blob pair */
			} else {
				k = 1 + rand() % s_receivers;
			}
			kid = &s_kids[k];
			if (kid->pid > 0 && !kid->stopped && kid->due == 0) {
				if (r >= 85) {
					kill(kid->pid, SIGSTOP);
					kid->stopped = true;
					kid->due = now + 200 + rand() % 800;
					stalls++;
				} else {
					kill(kid->pid, SIGKILL);
					waitpid(kid->pid, NULL, 0);
					kid->pid = 0;
					kid->due = now + 50 + rand() % 250;
					kills++;
				}
			}
			next_act = now + 200 + rand() % 500;
		}
		usleep(5000);
	}
	/* Stop the receivers and beastd; then read both sides' ledgers. */
	for (int k = s_nkids - 1; k >= 0; k--) {
		if (s_kids[k].pid > 0) {
			if (s_kids[k].stopped) {
				kill(s_kids[k].pid, SIGCONT);
			}
			kill(s_kids[k].pid, SIGTERM);
		}
	}
	for (int k = 0; k < s_nkids; k++) {
		for (int w = 0; s_kids[k].pid > 0 && w < 1000; w++) {
			if (waitpid(s_kids[k].pid, NULL, WNOHANG) == s_kids[k].pid) {
				s_kids[k].pid = 0;
			} else {
				usleep(10000);
			}
		}
		if (s_kids[k].pid > 0) {
			kill(s_kids[k].pid, SIGKILL);
			waitpid(s_kids[k].pid, NULL, 0);
		}
	}
	for (int i = 0; i < s_senders; i++) {
		char p[256], line[32];
		FILE *f = fopen(s_path(p, sizeof p, (snprintf(line, sizeof line, "s%d", i), line),
		                       "ledger"),
		                "r");
		uint64_t expect = 0;

		while (f != NULL && fgets(line, sizeof line, f) != NULL) {
			uint64_t seq = strtoull(line, NULL, 10);

			/* The ledger is in order, without gaps. */
			if (seq != expect) {
				fprintf(stderr, "chaos-soak: s%d ledger jumps from %llu to %llu\n", i,
				        (unsigned long long)expect, (unsigned long long)seq);
				status = 1;
			}
			expect = seq + 1;
		}
		if (f != NULL) {
			fclose(f);
		}
		ledgered[i] = expect;
		/* Room for unledgered extras: a put committed just before a kill. */
		s_tally[i] = (s_tally_t){.sender = i, .n = expect + 1024};
		s_tally[i].count = calloc(s_tally[i].n, 1);
		messages += expect;
	}
	for (int j = 0; j < s_receivers; j++) {
		char p[256], name[16];
		bm_dedup_opts_t dopt = {.window = 1 << 20, .replay_note = s_note};
		bm_dedup_t *d = NULL;

		snprintf(name, sizeof name, "r%d", j);
		if (bm_dedup_open(s_path(p, sizeof p, name, "dedup"), &dopt, &d) < 0) {
			fprintf(stderr, "chaos-soak: cannot read %s's ledger\n", name);
			status = 1;
		}
		bm_dedup_destroy(&d);
	}
	for (int i = 0; i < s_senders; i++) {
		for (uint64_t q = 0; q < s_tally[i].n; q++) {
			if (q < ledgered[i] && s_tally[i].count[q] == 0) {
				lost++;
			}
			if (s_tally[i].count[q] > 1) {
				dup += s_tally[i].count[q] - 1;
			}
		}
		free(s_tally[i].count);
	}
	s_check_blobs(&blobs, &blobs_lost, &blobs_bad);
	for (int i = 0; i < s_senders; i++) {
		char name[16], path[256], line[32];
		FILE *df;

		snprintf(name, sizeof name, "s%d", i);
		if ((df = fopen(s_path(path, sizeof path, name, "direct"), "r")) != NULL) {
			while (fgets(line, sizeof line, df) != NULL) {
				direct += strtoull(line, NULL, 10);
			}
			fclose(df);
		}
	}
	printf("chaos-soak: messages %llu, kills %llu, restarts %llu, stalls %llu, disk-full %llu, "
	       "lost %llu, duplicated %llu; blobs %llu, lost %llu, damaged %llu%s\n",
	       (unsigned long long)messages, (unsigned long long)kills, (unsigned long long)restarts,
	       (unsigned long long)stalls, (unsigned long long)diskfull, (unsigned long long)lost,
	       (unsigned long long)dup, (unsigned long long)blobs, (unsigned long long)blobs_lost,
	       (unsigned long long)blobs_bad, s_bad_notes ? " (and unreadable notes)" : "");
	if (s_direct) {
		printf("chaos-soak: direct routes: %llu messages sent over them by the senders' last lives\n",
		       (unsigned long long)direct);
	}
	if (limited_once && diskfull == 0) {
		printf("chaos-soak: note: sender 0 never hit its 32 KiB limit (run longer)\n");
	}
	if (lost > 0 || dup > 0 || s_bad_notes > 0 || messages == 0 || blobs == 0 ||
	    blobs_lost > 0 || blobs_bad > 0 || (s_direct && direct == 0)) {
		status = 1;
	}
	if (keep) {
		printf("chaos-soak: kept %s\n", s_root);
	} else {
		(void)bm_rmtree(s_root);
	}
	return status;
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
		{"seconds", required_argument, NULL, 't'}, {"senders", required_argument, NULL, 's'},
		{"receivers", required_argument, NULL, 'r'}, {"rate", required_argument, NULL, 'R'},
		{"seed", required_argument, NULL, 'S'}, {"keep", no_argument, NULL, 'k'},
		{"role", required_argument, NULL, 'o'}, {"index", required_argument, NULL, 'i'},
		{"root", required_argument, NULL, 'x'}, {"direct", no_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'}, {0}};
	const char *role = NULL;
	int seconds = 60, index = 0, ch;
	unsigned seed = (unsigned)getpid() ^ (unsigned)bm_wall_ms();
	bool keep = false;

	static char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);

	/* The roles are this program again: find it even when run by a
	 * relative path from elsewhere. */
	if (n > 0) {
		self[n] = '\0';
		s_self = self;
	} else {
		s_self = argv[0];
	}
	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (ch) {
		case 't': seconds = atoi(optarg); break;
		case 's': s_senders = atoi(optarg); break;
		case 'r': s_receivers = atoi(optarg); break;
		case 'R': s_rate = atoi(optarg); break;
		case 'S': seed = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'k': keep = true; break;
		case 'd': s_direct = true; break;
		case 'o': role = optarg; break;
		case 'i': index = atoi(optarg); break;
		case 'x': snprintf(s_root, sizeof s_root, "%s", optarg); break;
		default:
			fprintf(ch == 'h' ? stdout : stderr,
			        "usage: chaos-soak [--seconds N] [--senders S] [--receivers R] "
			        "[--rate MSGS_PER_S] [--seed X] [--keep] [--direct]\n");
			return ch == 'h' ? 0 : 2;
		}
	}
	if (seconds < 1 || seconds > 86400 || s_senders < 1 || s_senders > S_MAX ||
	    s_receivers < 1 || s_receivers > S_MAX || s_rate < 1 || s_rate > 1000) {
		fprintf(stderr, "chaos-soak: out of range (1..%d senders and receivers, rate "
		                "1..1000)\n", S_MAX);
		return 2;
	}
	signal(SIGTERM, s_on_term);
	signal(SIGINT, s_on_term);
	signal(SIGPIPE, SIG_IGN);
	if (role != NULL) {
		snprintf(s_run, sizeof s_run, "%s/run", s_root);
		snprintf(s_state, sizeof s_state, "%s/state", s_root);
		snprintf(s_stopfile, sizeof s_stopfile, "%s/stop", s_root);
		if (strcmp(role, "bsender") == 0) {
			return s_blob_sender();
		}
		if (strcmp(role, "breceiver") == 0) {
			return s_blob_receiver();
		}
		return strcmp(role, "sender") == 0 ? s_sender(index) : s_receiver(index);
	}
	return s_harness(seconds, seed, keep);
}

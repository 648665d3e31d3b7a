/*
 * cli_blob.c - `beast blob recv` and `beast blob send`: move files between
 * two processes on one machine over the bulk channel (shm/), without the
 * mesh.
 *
 *   beast blob recv [--out DIR] [--count N] NAME
 *       listens as NAME, writes each blob to DIR/<its name> (through a
 *       .part file renamed when complete and verified), prints one line per
 *       blob: name, size, CRC32C, GB/s.  Serves one sender after another
 *       until N blobs arrived (default: until interrupted).
 *   beast blob send [--as NAME] [--timeout MS] TO FILE...
 *       streams each file to TO with a checksum and waits for TO to confirm
 *       it; exit 0 once every file is confirmed.
 *
 * Files larger than a quarter of the ring travel as one sealed memfd (the
 * receiver maps it); smaller ones stream through the ring straight from
 * read().  Ctrl-C stops recv between blobs.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bm_shm.h"
#include "cli_blob.h"

#define S_RING ((size_t)64 << 20)
#define S_POLL_MS 250

static volatile sig_atomic_t s_stop;

static void
s_on_signal(int sig)
{
	(void)sig;
	s_stop = 1;
}

static void
s_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = s_on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

static const char s_help[] =
	"usage: beast blob recv [--out DIR] [--count N] NAME\n"
	"       beast blob send [--as NAME] [--timeout MS] TO FILE...\n"
	"\n"
	"Moves files over a shared-memory channel; beastd is not needed.\n"
	"  recv  listen as NAME in $BEAST_DIR/shm/NAME.sock; write each blob received to\n"
	"        DIR (default .) under its own name; print name, size, CRC32C and GB/s.\n"
	"        Stops after N blobs (default: run until interrupted).\n"
	"  send  send each FILE to the receiver TO, checksummed; wait until TO confirms it\n"
	"        (MS per file, default 60000).\n"
	"Exit status: 0 ok, 1 failure, 2 usage.\n";

static int
s_usage(const char *why)
{
	if (why != NULL) {
		fprintf(stderr, "beast blob: %s\n\n", why);
	}
	fputs(s_help, stderr);
	return 2;
}

static long
s_num(const char *s, long min, long max)
{
	char *end;
	long v;

	if (s == NULL || *s == '\0') {
		return -1;
	}
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max) {
		return -1;
	}
	return v;
}

/* A received name becomes a file name only if it is a plain one. */
static void
s_safe_name(const bm_blob_info_t *info, char *out, size_t size)
{
	const char *n = info->name;
	bool ok = n[0] != '\0' && n[0] != '.' && strchr(n, '/') == NULL;

	if (ok) {
		snprintf(out, size, "%s", n);
	} else {
		snprintf(out, size, "blob-%llu", (unsigned long long)info->id);
	}
}

static void
s_rundir_hint(int rc, const char *dir)
{
	if (rc == BM_EUNSAFEDIR) {
		fprintf(stderr, "  the runtime directory must be yours and mode 0700 (chmod 700 it, or "
		                "pick another with --dir)\n");
	} else if (rc == -ENOENT && dir == NULL) {
		fprintf(stderr, "  no runtime directory yet: start `beast blob recv NAME` first\n");
	}
}

static int
s_recv_one(bm_channel_t *ch, const char *out_dir, const char *listen_name)
{
	char name[BM_BLOB_NAME_MAX + 1], part[BM_PATH_MAX], final[BM_PATH_MAX];
	bm_ring_rec_t rec;
	bm_blob_info_t info;
	int64_t t0;
	int fd, rc;

	/* Wait for the next blob in short steps so Ctrl-C is seen. */
	do {
		rc = bm_channel_peek(ch, S_POLL_MS, &rec);
	} while (rc == -ETIMEDOUT && !s_stop);
	if (rc < 0) {
		return rc;
	}
	snprintf(part, sizeof part, "%s/.%s-%d.part", out_dir, listen_name, (int)getpid());
	fd = open(part, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		fprintf(stderr, "beast blob recv: cannot write in %s: %s (pick another --out)\n",
		        out_dir, bm_strerror(rc));
		return rc;
	}
	t0 = bm_mono_ns();
	rc = bm_blob_recv_fd(ch, fd, 60000, &info);
	if (close(fd) < 0 && rc == 0) {
		rc = -errno;
	}
	if (rc == BM_EPROTO) {
		unlink(part);
		fprintf(stderr, "beast blob recv: '%s' sent a record that is not a blob; "
		                "dropping that sender\n", bm_channel_peer_name(ch));
		return BM_EPEER;
	}
	if (rc < 0) {
		unlink(part);
		if (rc == BM_ECORRUPT) {
			fprintf(stderr, "beast blob recv: blob '%s' from '%s' failed its checksum or size "
			                "check; discarded (the sender is told and can resend)\n",
			        info.name, bm_channel_peer_name(ch));
			return 0;
		}
		return rc;
	}
	s_safe_name(&info, name, sizeof name);
	snprintf(final, sizeof final, "%s/%s", out_dir, name);
	if (rename(part, final) < 0) {
		rc = -errno;
		unlink(part);
		fprintf(stderr, "beast blob recv: cannot name the file %s: %s\n", final, bm_strerror(rc));
		return rc;
	}
	{
		double secs = (double)(bm_mono_ns() - t0) / 1e9;
		char crc[16] = "-";

		if (info.has_crc) {
			snprintf(crc, sizeof crc, "%08x", info.crc);
		}
		printf("%s\t%llu\tcrc32c:%s\t%.2f GB/s\n", name, (unsigned long long)info.size, crc,
		       secs > 0 ? (double)info.size / secs / 1e9 : 0.0);
		fflush(stdout);
	}
	return 1;
}

static int
s_recv(int argc, char **argv, const char *dir)
{
	const char *out_dir = ".", *name = NULL;
	long count = 0, got = 0;
	bm_listener_t *l = NULL;
	char sock[300], rundir[BM_PATH_MAX];
	struct stat st;
	int rc;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			fputs(s_help, stdout);
			return 0;
		} else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
			out_dir = argv[++i];
		} else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
			if ((count = s_num(argv[++i], 1, 1L << 40)) < 0) {
				return s_usage("--count wants a positive number");
			}
		} else if (argv[i][0] == '-') {
			return s_usage("unknown option for recv");
		} else if (name == NULL) {
			name = argv[i];
		} else {
			return s_usage("recv takes one NAME");
		}
	}
	if (name == NULL) {
		return s_usage("recv needs the NAME to listen as");
	}
	if (stat(out_dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "beast blob recv: output directory %s does not exist (create it or pass "
		                "--out)\n", out_dir);
		return 1;
	}
	if ((rc = bm_listener_open(dir, name, &l)) < 0) {
		if (rc == BM_ENAMETAKEN) {
			fprintf(stderr, "beast blob recv: another receiver is already listening as '%s' "
			                "(stop it or pick another NAME)\n", name);
		} else if (rc == BM_EBADNAME) {
			fprintf(stderr, "beast blob recv: '%s' is not a valid name (1-64 of A-Z a-z 0-9 . _ -, "
			                "not starting with '.')\n", name);
		} else {
			fprintf(stderr, "beast blob recv: cannot listen as '%s': %s\n", name, bm_strerror(rc));
			s_rundir_hint(rc, dir);
		}
		return 1;
	}
	s_signals();
	if (bm_rundir_resolve(dir, false, rundir) == 0 &&
	    snprintf(sock, sizeof sock, "%.200s/shm/%.64s.sock", rundir, name) > 0) {
		fprintf(stderr, "beast blob recv: listening on %s\n", sock);
	}
	while (!s_stop && (count == 0 || got < count)) {
		bm_channel_t *ch = NULL;

		rc = bm_listener_accept(l, S_POLL_MS, NULL, &ch);
		if (rc == -ETIMEDOUT || rc == -EINTR) {
			continue;
		}
		if (rc < 0) {
			fprintf(stderr, "beast blob recv: a sender failed to connect: %s\n", bm_strerror(rc));
			continue;
		}
		while (!s_stop && (count == 0 || got < count)) {
			rc = s_recv_one(ch, out_dir, name);
			if (rc == 1) {
				got++;
			} else if (rc < 0) {
				if (rc != BM_EPEER && rc != -ETIMEDOUT) {
					fprintf(stderr, "beast blob recv: channel from '%s' failed: %s\n",
					        bm_channel_peer_name(ch), bm_strerror(rc));
				}
				break;
			}
		}
		bm_channel_destroy(&ch);
	}
	bm_listener_destroy(&l);
	return (count == 0 || got >= count) ? 0 : 1;
}

bm_cli_blob_announce_fn bm_cli_blob_announce;

static const char *
s_content_name(uint32_t content)
{
	return content == BM_BLOB_PLY ? "pointcloud/ply" :
	       content == BM_BLOB_PCD ? "pointcloud/pcd" : "application/octet-stream";
}

static uint32_t
s_content(const char *path)
{
	const char *dot = strrchr(path, '.');

	if (dot != NULL && strcasecmp(dot, ".ply") == 0) {
		return BM_BLOB_PLY;
	}
	if (dot != NULL && strcasecmp(dot, ".pcd") == 0) {
		return BM_BLOB_PCD;
	}
	return BM_BLOB_RAW;
}

static int
s_send(int argc, char **argv, const char *dir)
{
	const char *as = NULL, *to = NULL;
	bm_channel_opts_t opts = {.capacity = S_RING, .spin_us = -1};
	bm_channel_t *ch = NULL;
	long timeout = 60000;
	int first = 0, rc;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			fputs(s_help, stdout);
			return 0;
		} else if (strcmp(argv[i], "--as") == 0 && i + 1 < argc) {
			as = argv[++i];
		} else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
			if ((timeout = s_num(argv[++i], 1, 86400000)) < 0) {
				return s_usage("--timeout wants milliseconds");
			}
		} else if (argv[i][0] == '-' && argv[i][1] != '\0') {
			return s_usage("unknown option for send");
		} else {
			to = argv[i];
			first = i + 1;
			break;
		}
	}
	if (to == NULL || first >= argc) {
		return s_usage("send needs TO and at least one FILE");
	}
	rc = bm_channel_connect(dir, to, as, &opts, (int)timeout, &ch);
	if (rc < 0) {
		if (rc == -ENOENT || rc == -ECONNREFUSED) {
			fprintf(stderr, "beast blob send: nobody is receiving as '%s' (start `beast blob recv "
			                "%s` first, with the same --dir)\n", to, to);
		} else if (rc == BM_EBADNAME) {
			fprintf(stderr, "beast blob send: '%s' is not a valid name\n", as ? as : to);
		} else {
			fprintf(stderr, "beast blob send: cannot connect to '%s': %s\n", to, bm_strerror(rc));
			s_rundir_hint(rc, dir);
		}
		return 1;
	}
	for (int i = first; i < argc; i++) {
		const char *path = argv[i], *base = strrchr(path, '/');
		bm_blob_opts_t bo = {.name = base ? base + 1 : path, .content = s_content(path),
		                     .flags = BM_BLOB_CHECKSUM};
		struct stat st;
		int64_t id;
		int fd = open(path, O_RDONLY | O_CLOEXEC);

		if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
			fprintf(stderr, "beast blob send: cannot read %s: %s (a regular file is needed)\n",
			        path, fd < 0 ? strerror(errno) : "not a regular file");
			if (fd >= 0) {
				close(fd);
			}
			bm_channel_destroy(&ch);
			return 1;
		}
		if (bm_cli_blob_announce != NULL &&
		    bm_cli_blob_announce(dir, as, to, bo.name, (unsigned long long)st.st_size,
		                         s_content_name(bo.content)) == 0) {
			fprintf(stderr, "beast blob send: announced %s to %s over the mesh\n", bo.name, to);
		}
		id = bm_blob_send_fd(ch, fd, (uint64_t)st.st_size, &bo, (int)timeout);
		close(fd);
		rc = id < 0 ? (int)id : bm_blob_wait(ch, (uint64_t)id, (int)timeout);
		if (rc < 0) {
			if (rc == BM_EPEER) {
				fprintf(stderr, "beast blob send: receiver '%s' went away before confirming %s\n",
				        to, path);
			} else if (rc == BM_ECORRUPT) {
				fprintf(stderr, "beast blob send: '%s' found %s damaged in transit; send it "
				                "again\n", to, path);
			} else if (rc == -ETIMEDOUT) {
				fprintf(stderr, "beast blob send: '%s' did not confirm %s within %ld ms "
				                "(raise --timeout)\n", to, path, timeout);
			} else {
				fprintf(stderr, "beast blob send: %s: %s\n", path, bm_strerror(rc));
			}
			bm_channel_destroy(&ch);
			return 1;
		}
		printf("%s\t%llu\tconfirmed by %s\n", bo.name, (unsigned long long)st.st_size, to);
		fflush(stdout);
	}
	bm_channel_destroy(&ch);
	return 0;
}

int
bm_cli_blob(int argc, char **argv, const char *dir)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		if (argc < 2) {
			return s_usage(NULL);
		}
		fputs(s_help, stdout);
		return 0;
	}
	if (strcmp(argv[1], "recv") == 0) {
		return s_recv(argc - 1, argv + 1, dir);
	}
	if (strcmp(argv[1], "send") == 0) {
		return s_send(argc - 1, argv + 1, dir);
	}
	return s_usage("unknown blob command (recv or send)");
}

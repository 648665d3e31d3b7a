/*
 * test_security.c - CURVE on beastd's tcp endpoint and the local trust
 * boundary, with real processes: beastd as a child on loopback TCP (a free
 * port), agents as forked processes, real key files, and a TCP relay child
 * that records every byte between a client and beastd so a test can look
 * for a plaintext body on the wire.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bm_agent.h"
#include "bm_proxy.h"
#include "testutil.h"

#define HB 200 /* heartbeat for these tests, ms */
#define CANARY "beastmesh-plaintext-canary-7f3a9c"

static char *s_dir;        /* runtime dir of the test's beastd */
static char s_state[512];  /* BEAST_STATE */
static char s_keys[600];   /* BEAST_STATE/keys */
static char s_allow[700];  /* BEAST_STATE/keys/allowed */
static char s_other[600];  /* keys beastd has never heard of */
static pid_t s_beastd;     /* the test's beastd, or 0 */

/* ---- helpers ---- */

static void
s_path(char *out, size_t cap, const char *dir, const char *file)
{
	ck_assert_int_lt(snprintf(out, cap, "%s/%s", dir, file), (int)cap);
}

static void
s_copy(const char *from, const char *to)
{
	char buf[4096];
	FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
	size_t n;

	ck_assert_ptr_nonnull(in);
	ck_assert_ptr_nonnull(out);
	while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
		ck_assert_uint_eq(fwrite(buf, 1, n, out), n);
	}
	fclose(in);
	ck_assert_int_eq(fclose(out), 0);
}

/* A listening loopback socket on a port the kernel picked. */
static int
s_listen(int *ret_port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	ck_assert_int_eq(listen(fd, 4), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	*ret_port = ntohs(a.sin_port);
	return fd;
}

/* A loopback port free right now (closed again; beastd binds it next). */
static int
s_free_port(void)
{
	int port, fd = s_listen(&port);

	close(fd);
	return port;
}

/* Starts beastd on s_dir with a tcp endpoint (CURVE or not) plus extra
 * arguments; waits until it answers over ipc.  Returns its pid or -1. */
static pid_t
s_beastd_start(int port, bool curve, const char *a1, const char *a2)
{
	char ep[64], hb[16];
	pid_t pid;

	snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
	snprintf(hb, sizeof hb, "%d", HB);
	pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execl(BM_BEASTD_PATH, "beastd", "--dir", s_dir, "--heartbeat", hb, "--tcp", ep,
		      curve ? "--curve" : a1, curve ? a1 : a2, curve ? a2 : NULL, (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || !tu_broker_answers(s_dir, 5000)) {
		if (pid > 0) {
			tu_kill9(pid);
		}
		return -1;
	}
	return pid;
}

static int
s_tcp_open(int port, const char *name, const char *key, bm_client_t **ret)
{
	char ep[64], skey[700];
	bm_client_opts_t o = {.endpoint = ep, .name = name, .heartbeat_ms = HB,
	                      .connect_timeout_ms = 1500};

	snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
	if (key != NULL) {
		s_path(skey, sizeof skey, s_keys, "server.pub");
		o.key_file = key;
		o.server_key_file = skey;
	}
	return bm_client_open(&o, ret);
}

/* ---- fixture: a scratch dir with keys for alice and bob allowed, and
 * mallory's made elsewhere ---- */

static void
s_setup(void)
{
	char from[800], to[800];

	s_dir = tu_scratch_dir();
	ck_assert_ptr_nonnull(s_dir);
	s_path(s_state, sizeof s_state, s_dir, "state");
	s_path(s_keys, sizeof s_keys, s_state, "keys");
	s_path(s_allow, sizeof s_allow, s_keys, "allowed");
	s_path(s_other, sizeof s_other, s_dir, "other");
	ck_assert_int_eq(setenv("BEAST_STATE", s_state, 1), 0);
	ck_assert_int_eq(bm_curve_keygen(s_keys, "alice"), 0);
	ck_assert_int_eq(bm_curve_keygen(s_keys, "bob"), 0);
	ck_assert_int_eq(bm_curve_keygen(s_other, "mallory"), 0);
	ck_assert_int_eq(mkdir(s_allow, 0700), 0);
	s_path(from, sizeof from, s_keys, "alice.pub");
	s_path(to, sizeof to, s_allow, "alice.pub");
	s_copy(from, to);
	s_path(from, sizeof from, s_keys, "bob.pub");
	s_path(to, sizeof to, s_allow, "bob.pub");
	s_copy(from, to);
	s_beastd = 0;
}

static void
s_teardown(void)
{
	if (s_beastd > 0) {
		tu_kill9(s_beastd);
		s_beastd = 0;
	}
	tu_rmrf(&s_dir);
}

/* ---- keys ---- */

START_TEST(keygen_writes_a_private_secret_file_and_a_public_file_naming_the_key)
{
	char key[800], pub[800], cmd[2048], text[2048];
	struct stat st;
	FILE *f;
	size_t n;

	s_path(key, sizeof key, s_keys, "alice.key");
	s_path(pub, sizeof pub, s_keys, "alice.pub");
	ck_assert_int_eq(stat(key, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
	f = fopen(pub, "r");
	ck_assert_ptr_nonnull(f);
	n = fread(text, 1, sizeof text - 1, f);
	fclose(f);
	text[n] = '\0';
	ck_assert_ptr_nonnull(strstr(text, "name = \"alice\""));
	ck_assert_ptr_null(strstr(text, "secret-key"));
	/* Never overwrites a key. */
	ck_assert_int_eq(bm_curve_keygen(s_keys, "alice"), -EEXIST);
	/* The CLI, into a directory of our choice. */
	snprintf(cmd, sizeof cmd, "%s keygen --out %s/cli carol >/dev/null", BM_BEAST_PATH, s_dir);
	ck_assert_int_eq(system(cmd), 0);
	snprintf(key, sizeof key, "%s/cli/carol.key", s_dir);
	ck_assert_int_eq(stat(key, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
	snprintf(pub, sizeof pub, "%s/cli/carol.pub", s_dir);
	ck_assert_int_eq(stat(pub, &st), 0);
	snprintf(cmd, sizeof cmd, "%s keygen --out %s/cli carol 2>/dev/null", BM_BEAST_PATH, s_dir);
	ck_assert_int_eq(WEXITSTATUS(system(cmd)), 1);
}
END_TEST

START_TEST(beastd_makes_its_server_key_on_first_use_and_refuses_one_open_to_others)
{
	char key[800], pub[800];
	struct stat st;
	int port = s_free_port();
	pid_t pid;

	s_path(key, sizeof key, s_keys, "server.key");
	s_path(pub, sizeof pub, s_keys, "server.pub");
	ck_assert_int_lt(stat(key, &st), 0);
	s_beastd = s_beastd_start(port, true, NULL, NULL);
	ck_assert_int_gt(s_beastd, 0);
	ck_assert_int_eq(stat(key, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
	ck_assert_int_eq(stat(pub, &st), 0);
	ck_assert_int_eq(tu_term(s_beastd, 5000), 0);
	s_beastd = 0;

	ck_assert_int_eq(chmod(key, 0640), 0);
	pid = fork();
	if (pid == 0) {
		char ep[64];

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
		execl(BM_BEASTD_PATH, "beastd", "--dir", s_dir, "--tcp", ep, "--curve", (char *)NULL);
		_exit(127);
	}
	ck_assert_int_eq(tu_wait(pid, 5000), 1);
	/* Without --curve, only loopback. */
	pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execl(BM_BEASTD_PATH, "beastd", "--dir", s_dir, "--tcp", "tcp://192.0.2.1:7450",
		      (char *)NULL);
		_exit(127);
	}
	ck_assert_int_eq(tu_wait(pid, 5000), 1);
}
END_TEST

/* ---- who gets in ---- */

START_TEST(an_unknown_key_is_refused_and_an_allowed_one_gets_in)
{
	char key[800];
	bm_client_t *c = NULL;
	int port = s_free_port();

	s_beastd = s_beastd_start(port, true, "--allow", s_allow);
	ck_assert_int_gt(s_beastd, 0);
	s_path(key, sizeof key, s_other, "mallory.key");
	ck_assert_int_eq(s_tcp_open(port, "mallory", key, &c), BM_ENOCURVE);
	ck_assert_int_eq(s_tcp_open(port, NULL, key, &c), BM_ENOCURVE);
	/* Without keys at all, a CURVE endpoint says nothing either. */
	ck_assert_int_eq(s_tcp_open(port, NULL, NULL, &c), BM_ENOBROKER);
	ck_assert_int_eq(tu_wait_agent(s_dir, "mallory", true, 300), -1);

	s_path(key, sizeof key, s_keys, "alice.key");
	ck_assert_int_eq(s_tcp_open(port, "alice", key, &c), 0);
	ck_assert_int_ge(tu_wait_agent(s_dir, "alice", true, 2000), 0);
	bm_client_destroy(&c);
}
END_TEST

START_TEST(a_known_key_cannot_register_another_agents_name)
{
	char key[800];
	bm_client_t *c = NULL;
	int port = s_free_port();

	s_beastd = s_beastd_start(port, true, NULL, NULL);
	ck_assert_int_gt(s_beastd, 0);
	s_path(key, sizeof key, s_keys, "alice.key");
	ck_assert_int_eq(s_tcp_open(port, "bob", key, &c), BM_EDENIED);
	ck_assert_int_eq(tu_stat(s_dir, "denied_key"), 1);
	ck_assert_int_eq(tu_wait_agent(s_dir, "bob", true, 300), -1);
	/* Not even when bob is not online, and not a name nobody holds. */
	ck_assert_int_eq(s_tcp_open(port, "zed", key, &c), BM_EDENIED);
	ck_assert_int_eq(tu_stat(s_dir, "denied_key"), 2);
	ck_assert_int_eq(s_tcp_open(port, "alice", key, &c), 0);
	bm_client_destroy(&c);
	/* A key taken out of the allow-list no longer gets in. */
	{
		char pub[800];

		s_path(pub, sizeof pub, s_allow, "alice.pub");
		ck_assert_int_eq(unlink(pub), 0);
		ck_assert_int_eq(s_tcp_open(port, "alice", key, &c), BM_ENOCURVE);
	}
}
END_TEST

/* bob, over CURVE: answers each "req" with its body, ACKs everything,
 * exits on "stop" or after 10 s. */
static int
s_bob(void *arg)
{
	int port = *(int *)arg;
	char key[800];
	bm_client_t *c = NULL;
	int64_t until = bm_mono_ms() + 10000;
	int rc = 1;

	s_path(key, sizeof key, s_keys, "bob.key");
	if (s_tcp_open(port, "bob", key, &c) < 0) {
		return 2;
	}
	while (bm_mono_ms() < until) {
		bm_event_t ev = {0};

		if (bm_client_recv(c, 100, &ev) < 0) {
			continue;
		}
		if (ev.kind == BM_EV_MESSAGE) {
			bool stop = strcmp(ev.msg->type, "stop") == 0;

			if (strcmp(ev.msg->type, "req") == 0) {
				(void)bm_client_reply(c, ev.msg, "rep", bm_msg_data(ev.msg),
				                      bm_msg_size(ev.msg));
			}
			(void)bm_client_ack(c, ev.msg);
			if (stop) {
				rc = 0;
				bm_event_clear(&ev);
				break;
			}
		}
		bm_event_clear(&ev);
	}
	bm_client_destroy(&c);
	return rc;
}

START_TEST(allowed_keys_send_and_request_end_to_end_over_curve)
{
	char key[800];
	bm_client_t *c = NULL;
	bm_msg_t *rep = NULL;
	bm_send_opts_t so = {.to = "bob", .type = "note"};
	bm_id_t id;
	bool acked = false;
	int port = s_free_port();
	pid_t bob;

	s_beastd = s_beastd_start(port, true, NULL, NULL);
	ck_assert_int_gt(s_beastd, 0);
	bob = tu_fork(s_bob, &port);
	ck_assert_int_ge(tu_wait_agent(s_dir, "bob", true, 5000), 0);
	s_path(key, sizeof key, s_keys, "alice.key");
	ck_assert_int_eq(s_tcp_open(port, "alice", key, &c), 0);

	ck_assert_int_eq(bm_client_send(c, &so, "hello", 5, &id), 0);
	for (int i = 0; i < 50 && !acked; i++) {
		bm_event_t ev = {0};

		if (bm_client_recv(c, 100, &ev) == 0) {
			ck_assert_int_ne(ev.kind, BM_EV_NACK);
			acked = ev.kind == BM_EV_ACK && bm_id_equal(&ev.id, &id);
		}
		bm_event_clear(&ev);
	}
	ck_assert(acked);
	ck_assert_int_eq(bm_client_request(c, "bob", "req", "over curve", 10, 5000, &rep), 0);
	ck_assert_uint_eq(bm_msg_size(rep), 10);
	ck_assert_int_eq(memcmp(bm_msg_data(rep), "over curve", 10), 0);
	ck_assert_str_eq(rep->from, "bob");
	bm_msg_destroy(&rep);
	so.type = "stop";
	ck_assert_int_eq(bm_client_send(c, &so, "", 0, &id), 0);
	ck_assert_int_eq(tu_wait(bob, 5000), 0);
	bm_client_destroy(&c);
}
END_TEST

START_TEST(an_agent_reaches_a_remote_beastd_over_curve_with_its_own_key_only)
{
	char ep[64], key[800], skey[800], st[800];
	bm_agent_opts_t o = {.name = "alice", .endpoint = ep, .key_file = key,
	                     .server_key_file = skey, .state_dir = st, .heartbeat_ms = HB,
	                     .connect_timeout_ms = 1500};
	bm_agent_t *a = NULL;
	int port = s_free_port();

	s_beastd = s_beastd_start(port, true, NULL, NULL);
	ck_assert_int_gt(s_beastd, 0);
	snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
	s_path(skey, sizeof skey, s_keys, "server.pub");
	s_path(st, sizeof st, s_dir, "agent-state");
	s_path(key, sizeof key, s_other, "mallory.key");
	ck_assert_int_eq(bm_agent_open(&o, &a), BM_ENOCURVE);
	s_path(key, sizeof key, s_keys, "bob.key");
	ck_assert_int_eq(bm_agent_open(&o, &a), BM_EDENIED);
	s_path(key, sizeof key, s_keys, "alice.key");
	ck_assert_int_eq(bm_agent_open(&o, &a), 0);
	ck_assert_int_ge(tu_wait_agent(s_dir, "alice", true, 2000), 0);
	bm_agent_destroy(&a);
}
END_TEST

/* ---- broadcast over CURVE ---- */

START_TEST(the_broadcast_proxy_tcp_endpoints_take_allowed_keys_only)
{
	char ep[64], pep[64], sep[64], hb[16], alice[800], bob[800], mallory[800], skey[800];
	int port = s_free_port(), pport = s_free_port(), sport = s_free_port();
	bm_pub_t *pub = NULL, *bad = NULL;
	bm_sub_t *sub = NULL;
	bool got = false;

	snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
	snprintf(pep, sizeof pep, "tcp://127.0.0.1:%d", pport);
	snprintf(sep, sizeof sep, "tcp://127.0.0.1:%d", sport);
	snprintf(hb, sizeof hb, "%d", HB);
	s_beastd = fork();
	if (s_beastd == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execl(BM_BEASTD_PATH, "beastd", "--dir", s_dir, "--heartbeat", hb, "--tcp", ep,
		      "--curve", "--pub-tcp", pep, "--sub-tcp", sep, (char *)NULL);
		_exit(127);
	}
	ck_assert(tu_broker_answers(s_dir, 5000));
	s_path(alice, sizeof alice, s_keys, "alice.key");
	s_path(bob, sizeof bob, s_keys, "bob.key");
	s_path(mallory, sizeof mallory, s_other, "mallory.key");
	s_path(skey, sizeof skey, s_keys, "server.pub");

	ck_assert_int_eq(bm_sub_open(&(bm_sub_opts_t){.endpoint = sep, .name = "alice",
	                                              .key_file = alice, .server_key_file = skey},
	                             &sub),
	                 0);
	ck_assert_int_eq(bm_sub_subscribe(sub, "sec/"), 0);
	ck_assert_int_eq(bm_pub_open(&(bm_pub_opts_t){.endpoint = pep, .name = "bob",
	                                              .key_file = bob, .server_key_file = skey},
	                             &pub),
	                 0);
	/* An unknown key never gets attached. */
	ck_assert_int_ne(bm_pub_open(&(bm_pub_opts_t){.endpoint = pep, .name = "mallory",
	                                              .key_file = mallory, .server_key_file = skey,
	                                              .connect_timeout_ms = 1000},
	                             &bad),
	                 0);
	ck_assert_ptr_null(bad);
	for (int i = 0; i < 50 && !got; i++) {
		bm_bcast_t m = {0};

		if (i % 10 == 0) {
			ck_assert_int_eq(bm_pub_send(pub, "sec/a", "over curve", 10), 0);
		}
		if (bm_sub_recv(sub, 100, &m) == 0 && m.kind == BM_BCAST_MSG) {
			ck_assert_str_eq(m.topic, "sec/a/");
			ck_assert_str_eq(m.from, "bob");
			ck_assert_uint_eq(bm_bcast_size(&m), 10);
			ck_assert_int_eq(memcmp(bm_bcast_data(&m), "over curve", 10), 0);
			got = true;
		}
		bm_bcast_clear(&m);
	}
	ck_assert(got);
	bm_pub_destroy(&pub);
	bm_sub_destroy(&sub);
}
END_TEST

/* Runs a shell command; returns its exit status and up to cap bytes of
 * its stdout and stderr. */
static int
s_sh(const char *cmd, char *out, size_t cap)
{
	char full[4096];
	FILE *f;
	size_t n;
	int st;

	snprintf(full, sizeof full, "%s 2>&1", cmd);
	f = popen(full, "r");
	ck_assert_ptr_nonnull(f);
	n = fread(out, 1, cap - 1, f);
	out[n] = '\0';
	st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

START_TEST(the_beast_cli_reaches_a_remote_beastd_and_its_proxy_over_curve)
{
	char ep[64], pep[64], sep[64], cmd[4096], out[4096], opts[3000];
	int port = s_free_port(), pport = s_free_port(), sport = s_free_port();

	snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
	snprintf(pep, sizeof pep, "tcp://127.0.0.1:%d", pport);
	snprintf(sep, sizeof sep, "tcp://127.0.0.1:%d", sport);
	s_beastd = fork();
	if (s_beastd == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execl(BM_BEASTD_PATH, "beastd", "--dir", s_dir, "--tcp", ep, "--curve", "--pub-tcp",
		      pep, "--sub-tcp", sep, (char *)NULL);
		_exit(127);
	}
	ck_assert(tu_broker_answers(s_dir, 5000));
	/* No --dir: the remote beastd is all these commands know of. */
	snprintf(opts, sizeof opts,
	         "env -u BEAST_DIR %s --connect %s --pub-connect %s --sub-connect %s "
	         "--key %s/alice.key --server-key %s/server.pub",
	         BM_BEAST_PATH, ep, pep, sep, s_keys, s_keys);
	snprintf(cmd, sizeof cmd, "%s ping --count 1", opts);
	ck_assert_int_eq(s_sh(cmd, out, sizeof out), 0);
	snprintf(cmd, sizeof cmd, "%s listen --count 1 bob", opts);
	ck_assert_int_eq(s_sh(cmd, out, sizeof out), 1);
	ck_assert_ptr_nonnull(strstr(out, "refused the name 'bob'"));
	snprintf(cmd, sizeof cmd, "%s pub --as alice sec/cli 'hello over curve'", opts);
	ck_assert_int_eq(s_sh(cmd, out, sizeof out), 0);
	snprintf(cmd, sizeof cmd, "%s sub --count 1 --timeout 5000 sec/", opts);
	ck_assert_int_eq(s_sh(cmd, out, sizeof out), 0);
	ck_assert_ptr_nonnull(strstr(out, "hello over curve"));
	snprintf(cmd, sizeof cmd,
	         "env -u BEAST_DIR %s --connect %s --key %s/mallory.key --server-key %s/server.pub ls",
	         BM_BEAST_PATH, ep, s_other, s_keys);
	ck_assert_int_eq(s_sh(cmd, out, sizeof out), 4);
	ck_assert_ptr_nonnull(strstr(out, "no answer over CURVE"));
}
END_TEST

/* ---- on the wire ---- */

typedef struct {
	int lfd;          /* listening socket the client connects to */
	int up_port;      /* beastd's tcp port */
	char record[800]; /* every byte, both ways, appended here */
} s_relay_t;

static bool
s_pump(int from, int to, int rec)
{
	char buf[65536];
	ssize_t n = read(from, buf, sizeof buf);

	if (n <= 0) {
		return false;
	}
	for (ssize_t off = 0; off < n;) {
		ssize_t w = write(to, buf + off, (size_t)(n - off));

		if (w <= 0) {
			return false;
		}
		off += w;
	}
	return write(rec, buf, (size_t)n) == n;
}

/* The relay child: one connection, copied both ways and recorded, for at
 * most 15 s. */
static int
s_relay(void *arg)
{
	s_relay_t *r = arg;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)r->up_port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct pollfd p[2] = {{.fd = r->lfd, .events = POLLIN}};
	int64_t until = bm_mono_ms() + 15000;
	int down, up, rec;

	if (poll(p, 1, 10000) != 1 || (down = accept(r->lfd, NULL, NULL)) < 0) {
		return 2;
	}
	up = socket(AF_INET, SOCK_STREAM, 0);
	rec = open(r->record, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (up < 0 || rec < 0 || connect(up, (struct sockaddr *)&a, sizeof a) < 0) {
		return 3;
	}
	p[0] = (struct pollfd){.fd = down, .events = POLLIN};
	p[1] = (struct pollfd){.fd = up, .events = POLLIN};
	while (bm_mono_ms() < until) {
		if (poll(p, 2, 100) < 0) {
			return 4;
		}
		if ((p[0].revents & (POLLIN | POLLHUP)) && !s_pump(down, up, rec)) {
			break;
		}
		if ((p[1].revents & (POLLIN | POLLHUP)) && !s_pump(up, down, rec)) {
			break;
		}
	}
	close(rec);
	close(up);
	close(down);
	return 0;
}

/* Sends CANARY through a relay to beastd (CURVE or not) and returns
 * whether the recording shows it in the clear. */
static bool
s_canary_visible(bool curve)
{
	s_relay_t r;
	char key[800], *text;
	bm_client_t *c = NULL;
	bm_send_opts_t so = {.to = "nobody", .type = "secret"};
	bm_id_t id;
	bool answered = false;
	int relay_port;
	pid_t relay;
	FILE *f;
	long size;

	r.up_port = s_free_port();
	r.lfd = s_listen(&relay_port);
	s_path(r.record, sizeof r.record, s_dir, "wire.bin");
	s_beastd = s_beastd_start(r.up_port, curve, NULL, NULL);
	ck_assert_int_gt(s_beastd, 0);
	relay = tu_fork(s_relay, &r);
	close(r.lfd);
	s_path(key, sizeof key, s_keys, "alice.key");
	ck_assert_int_eq(s_tcp_open(relay_port, "alice", curve ? key : NULL, &c), 0);
	ck_assert_int_eq(bm_client_send(c, &so, CANARY, strlen(CANARY), &id), 0);
	/* The NACK (nobody is online) proves the SEND crossed the relay. */
	for (int i = 0; i < 50 && !answered; i++) {
		bm_event_t ev = {0};

		if (bm_client_recv(c, 100, &ev) == 0) {
			answered = ev.kind == BM_EV_NACK && bm_id_equal(&ev.id, &id);
		}
		bm_event_clear(&ev);
	}
	ck_assert(answered);
	bm_client_destroy(&c);
	ck_assert_int_eq(tu_wait(relay, 10000), 0);

	f = fopen(r.record, "rb");
	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	rewind(f);
	ck_assert_int_gt(size, (long)strlen(CANARY));
	text = malloc((size_t)size);
	ck_assert_ptr_nonnull(text);
	ck_assert_uint_eq(fread(text, 1, (size_t)size, f), (size_t)size);
	fclose(f);
	answered = memmem(text, (size_t)size, CANARY, strlen(CANARY)) != NULL;
	free(text);
	return answered;
}

START_TEST(without_curve_the_body_is_visible_on_the_wire)
{
	/* The control: the relay and the search do find a plaintext body. */
	ck_assert(s_canary_visible(false));
}
END_TEST

START_TEST(with_curve_the_body_is_not_visible_on_the_wire)
{
	ck_assert(!s_canary_visible(true));
}
END_TEST

/* ---- local limits ---- */

START_TEST(bytes_waiting_for_a_slow_agent_are_capped_with_busy_never_dropped)
{
	enum { BODY = 65536, SENDS = 40, FIT = (1 << 20) / BODY };
	char *body = calloc(1, BODY);
	bm_client_t *slow, *fast;
	bm_send_opts_t so = {.to = "slow", .type = "bulk"};
	bm_id_t id;
	int busy = 0, other = 0, got = 0;
	bool acked = false;

	ck_assert_ptr_nonnull(body);
	s_beastd = s_beastd_start(s_free_port(), false, "--max-pending", "1048576");
	ck_assert_int_gt(s_beastd, 0);
	/* slow promises a long heartbeat: it is not read for a while but
	 * must not be dropped as gone meanwhile. */
	slow = tu_client(s_dir, "slow", NULL, 10000);
	fast = tu_client(s_dir, "fast", NULL, HB);
	ck_assert_ptr_nonnull(slow);
	ck_assert_ptr_nonnull(fast);
	for (int i = 0; i < SENDS; i++) {
		ck_assert_int_eq(bm_client_send(fast, &so, body, BODY, &id), 0);
	}
	/* Every send gets an answer: FIT are delivered (no ACK yet), the
	 * rest BUSY. */
	for (int i = 0; i < 100 && busy + other < SENDS - FIT; i++) {
		bm_event_t ev = {0};

		if (bm_client_recv(fast, 50, &ev) == 0) {
			if (ev.kind == BM_EV_NACK && ev.code == BM_EBUSY) {
				busy++;
				ck_assert_ptr_nonnull(strstr(ev.text, "--max-pending"));
			} else if (ev.kind == BM_EV_NACK || ev.kind == BM_EV_ACK) {
				other++;
			}
		}
		bm_event_clear(&ev);
	}
	ck_assert_int_eq(busy, SENDS - FIT);
	ck_assert_int_eq(other, 0);
	ck_assert_int_eq(tu_stat(s_dir, "nack_pending"), SENDS - FIT);
	/* slow catches up: everything it was given is there, whole. */
	for (int i = 0; i < 100 && got < FIT; i++) {
		bm_event_t ev = {0};

		if (bm_client_recv(slow, 50, &ev) == 0 && ev.kind == BM_EV_MESSAGE) {
			ck_assert_uint_eq(bm_msg_size(ev.msg), BODY);
			ck_assert_int_eq(bm_client_ack(slow, ev.msg), 0);
			got++;
		}
		bm_event_clear(&ev);
	}
	ck_assert_int_eq(got, FIT);
	ck_assert_int_eq(bm_client_flush(slow), 0);
	/* ...and the cap has room again. */
	ck_assert_int_eq(bm_client_send(fast, &so, body, BODY, &id), 0);
	for (int i = 0; i < 100 && !acked; i++) {
		bm_event_t ev = {0}, in = {0};

		if (bm_client_recv(slow, 20, &in) == 0 && in.kind == BM_EV_MESSAGE) {
			ck_assert_int_eq(bm_client_ack(slow, in.msg), 0);
			ck_assert_int_eq(bm_client_flush(slow), 0);
		}
		bm_event_clear(&in);
		if (bm_client_recv(fast, 20, &ev) == 0) {
			/* slow's ACKs and this send race to beastd on two
			 * connections: a BUSY may still come; retry as an
			 * outbox would. */
			if (ev.kind == BM_EV_NACK) {
				ck_assert_int_eq(ev.code, BM_EBUSY);
				ck_assert_int_eq(bm_client_send(fast, &so, body, BODY, &id), 0);
			}
			acked = ev.kind == BM_EV_ACK && bm_id_equal(&ev.id, &id);
		}
		bm_event_clear(&ev);
	}
	ck_assert(acked);
	bm_client_destroy(&fast);
	bm_client_destroy(&slow);
	free(body);
}
END_TEST

START_TEST(a_socket_behind_a_symlink_is_refused)
{
	char sock[800], real[800];
	bm_client_t *c = NULL;
	bm_channel_t *ch = NULL;
	bm_listener_t *l = NULL;

	s_beastd = s_beastd_start(s_free_port(), false, NULL, NULL);
	ck_assert_int_gt(s_beastd, 0);
	s_path(sock, sizeof sock, s_dir, "mesh.sock");
	s_path(real, sizeof real, s_dir, "mesh.real");
	ck_assert_int_eq(rename(sock, real), 0);
	ck_assert_int_eq(symlink(real, sock), 0);
	ck_assert_int_eq(bm_client_open(&(bm_client_opts_t){.dir = s_dir}, &c), BM_EUNSAFEDIR);
	ck_assert_int_eq(unlink(sock), 0);
	ck_assert_int_eq(rename(real, sock), 0);
	ck_assert_int_eq(bm_client_open(&(bm_client_opts_t){.dir = s_dir}, &c), 0);
	bm_client_destroy(&c);
	/* The same for a bulk channel's socket. */
	ck_assert_int_eq(bm_listener_open(s_dir, "target", &l), 0);
	s_path(sock, sizeof sock, s_dir, "shm/target.sock");
	s_path(real, sizeof real, s_dir, "shm/elsewhere.sock");
	ck_assert_int_eq(rename(sock, real), 0);
	ck_assert_int_eq(symlink(real, sock), 0);
	ck_assert_int_eq(bm_channel_connect(s_dir, "target", "me", NULL, 1000, &ch), BM_EUNSAFEDIR);
	ck_assert_int_eq(unlink(sock), 0);
	ck_assert_int_eq(rename(real, sock), 0);
	bm_listener_destroy(&l);
}
END_TEST

/* Producer child: a streamed blob over the consumer's cap, then a small
 * one; exits 0 when the first was refused and the second confirmed. */
static int
s_blob_producer(void *arg)
{
	static uint8_t big[300000], small[1000];
	bm_blob_opts_t o = {.name = "big", .flags = BM_BLOB_FORCE_STREAM | BM_BLOB_CHECKSUM};
	bm_channel_t *pc = NULL;
	int64_t deadline = bm_mono_ms() + 5000;
	int rc;

	(void)arg;
	memset(big, 'b', sizeof big);
	memset(small, 's', sizeof small);
	while ((rc = bm_channel_connect(s_dir, "capped", "feeder", NULL, 1000, &pc)) < 0 &&
	       bm_mono_ms() < deadline) {
		usleep(10000);
	}
	if (rc < 0 || bm_blob_send(pc, big, sizeof big, &o, 5000) != 1) {
		return 2;
	}
	o.name = "small";
	if (bm_blob_send(pc, small, sizeof small, &o, 5000) != 2) {
		return 3;
	}
	/* The refusal is reported like a bad blob; then the next is fine. */
	if (bm_blob_wait(pc, 1, 5000) != BM_ECORRUPT || bm_blob_wait(pc, 2, 5000) != 0) {
		return 4;
	}
	bm_channel_destroy(&pc);
	return 0;
}

START_TEST(a_streamed_blob_over_the_receivers_cap_is_refused_and_the_channel_goes_on)
{
	bm_channel_opts_t co = {.max_blob = 100000};
	bm_listener_t *l = NULL;
	bm_channel_t *ch = NULL;
	bm_blob_t *b = NULL;
	pid_t pid;

	ck_assert_int_eq(bm_listener_open(s_dir, "capped", &l), 0);
	pid = tu_fork(s_blob_producer, NULL);
	ck_assert_int_eq(bm_listener_accept(l, 5000, &co, &ch), 0);
	ck_assert_int_eq(bm_blob_recv(ch, 5000, &b), BM_ETOOBIG);
	ck_assert_ptr_null(b);
	ck_assert_int_eq(bm_blob_recv(ch, 5000, &b), 0);
	ck_assert_uint_eq(bm_blob_size(b), 1000);
	ck_assert_str_eq(bm_blob_info(b)->name, "small");
	bm_blob_destroy(&b);
	ck_assert_int_eq(tu_wait(pid, 10000), 0);
	bm_channel_destroy(&ch);
	bm_listener_destroy(&l);
}
END_TEST

static Suite *
s_suite(void)
{
	Suite *s = suite_create("security");
	TCase *tc = tcase_create("curve");

	tcase_add_unchecked_fixture(tc, tu_root_setup, tu_root_teardown);
	tcase_add_checked_fixture(tc, s_setup, s_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, keygen_writes_a_private_secret_file_and_a_public_file_naming_the_key);
	tcase_add_test(tc, beastd_makes_its_server_key_on_first_use_and_refuses_one_open_to_others);
	tcase_add_test(tc, an_unknown_key_is_refused_and_an_allowed_one_gets_in);
	tcase_add_test(tc, a_known_key_cannot_register_another_agents_name);
	tcase_add_test(tc, allowed_keys_send_and_request_end_to_end_over_curve);
	tcase_add_test(tc, the_broadcast_proxy_tcp_endpoints_take_allowed_keys_only);
	tcase_add_test(tc, an_agent_reaches_a_remote_beastd_over_curve_with_its_own_key_only);
	tcase_add_test(tc, the_beast_cli_reaches_a_remote_beastd_and_its_proxy_over_curve);
	tcase_add_test(tc, without_curve_the_body_is_visible_on_the_wire);
	tcase_add_test(tc, with_curve_the_body_is_not_visible_on_the_wire);
	suite_add_tcase(s, tc);

	tc = tcase_create("limits");
	tcase_add_unchecked_fixture(tc, tu_root_setup, tu_root_teardown);
	tcase_add_checked_fixture(tc, s_setup, s_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, bytes_waiting_for_a_slow_agent_are_capped_with_busy_never_dropped);
	tcase_add_test(tc, a_streamed_blob_over_the_receivers_cap_is_refused_and_the_channel_goes_on);
	tcase_add_test(tc, a_socket_behind_a_symlink_is_refused);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return tu_run_suite(s_suite());
}

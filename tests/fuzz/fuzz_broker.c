/*
 * fuzz_broker.c - libFuzzer target for the broker's command handling:
 * sequences of frames from up to three peers at once, whatever they hold.
 *
 * A real broker runs on a thread of this process over ipc in a scratch
 * directory, for the whole fuzzing run (its state carries over from input
 * to input, as a long-lived beastd's does).  Each input is cut into frames:
 *   [flags:u8][len:u8][len bytes] ...
 * flags bits 0-1 pick the peer (a DEALER of its own), bit 2 says "more
 * frames follow" (ZMQ_SNDMORE).  After sending them all, peer 0 PINGs and
 * must get its PONG within 2 s: the broker is still alive and serving.
 * Frames that the seeds start from are in tests/fuzz/corpus/broker.
 */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "bm_mesh.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define S_PEERS 3

static bm_broker_t *s_broker;
static volatile sig_atomic_t s_stop;
static void *s_ctx;
static char s_ep[BM_PATH_MAX + 16];

static void *
s_run(void *arg)
{
	(void)bm_broker_run(arg, &s_stop);
	return NULL;
}

static void
s_start(void)
{
	static char dir[] = "/tmp/bmfuzz-broker.XXXXXX";
	bm_broker_opts_t o = {.heartbeat_ms = 100, .hwm = 1000};
	pthread_t t;

	if (mkdtemp(dir) == NULL) {
		abort();
	}
	o.dir = dir;
	if (bm_broker_open(&o, &s_broker) < 0) {
		abort();
	}
	snprintf(s_ep, sizeof s_ep, "ipc://%s/mesh.sock", bm_broker_dir(s_broker));
	if (pthread_create(&t, NULL, s_run, s_broker) != 0) {
		abort();
	}
	pthread_detach(t);
	s_ctx = zmq_ctx_new();
}

/* Waits for a PONG on peer p (other frames are read and dropped). */
static bool
s_pong(void *p)
{
	static const uint8_t ping[] = {0x92, 0x01, BM_CMD_PING};
	int64_t deadline = bm_mono_ms() + 2000;

	if (zmq_send(p, ping, sizeof ping, ZMQ_DONTWAIT) < 0) {
		return false;
	}
	while (bm_mono_ms() < deadline) {
		zmq_pollitem_t it = {.socket = p, .events = ZMQ_POLLIN};
		uint8_t buf[8];
		int n, more = 0;
		size_t sz = sizeof more;

		if (zmq_poll(&it, 1, 50) <= 0) {
			continue;
		}
		n = zmq_recv(p, buf, sizeof buf, 0);
		zmq_getsockopt(p, ZMQ_RCVMORE, &more, &sz);
		if (n >= 3 && buf[0] >= 0x92 && buf[2] == BM_CMD_PONG && !more) {
			return true;
		}
		while (more) {
			zmq_recv(p, buf, sizeof buf, 0);
			zmq_getsockopt(p, ZMQ_RCVMORE, &more, &sz);
		}
	}
	return false;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	void *peer[S_PEERS];
	bool open[S_PEERS] = {false};
	int linger = 0;

	if (s_broker == NULL) {
		s_start();
	}
	for (int i = 0; i < S_PEERS; i++) {
		peer[i] = zmq_socket(s_ctx, ZMQ_DEALER);
		if (peer[i] == NULL) {
			abort();
		}
		zmq_setsockopt(peer[i], ZMQ_LINGER, &linger, sizeof linger);
		if (zmq_connect(peer[i], s_ep) < 0) {
			abort();
		}
	}
	while (size >= 2) {
		int which = (data[0] & 3) % S_PEERS, more = data[0] & 4;
		size_t len = data[1] < size - 2 ? data[1] : size - 2;

		(void)zmq_send(peer[which], data + 2, len, ZMQ_DONTWAIT | (more ? ZMQ_SNDMORE : 0));
		open[which] = more != 0;
		data += 2 + len;
		size -= 2 + len;
	}
	/* End any message left open, so the PING below is a message of its own. */
	for (int i = 0; i < S_PEERS; i++) {
		if (open[i]) {
			(void)zmq_send(peer[i], "", 0, ZMQ_DONTWAIT);
		}
	}
	if (!s_pong(peer[0])) {
		fprintf(stderr, "fuzz-broker: no PONG within 2 s after the input\n");
		abort();
	}
	for (int i = 0; i < S_PEERS; i++) {
		zmq_close(peer[i]);
	}
	return 0;
}

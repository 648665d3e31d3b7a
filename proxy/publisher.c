/*
 * publisher.c - bm_pub_t: publishes broadcasts to the proxy's pub.sock.
 *
 * The socket is an XPUB connected to the proxy's XSUB.  An XPUB (rather
 * than a PUB) gives two things a publisher needs: it hears the proxy's
 * subscription when the connection is up, so open waits for it and the
 * first message is not lost to a slow joiner; and with ZMQ_XPUB_NODROP a
 * full queue refuses the send (EAGAIN -> BM_EFULL) instead of dropping it
 * silently, so back-pressure reaches the caller.
 *
 * Each message gets the next per-publisher sequence number (seq) and the
 * next number of its topic's own sequence (tseq), which subscribers use
 * to count losses (proxy/proxy.c explains why per topic).  The topic
 * counters live in a table bounded at S_TOPICS_MAX topics: past it the
 * table is cleared and topics restart at tseq 1, which subscribers take
 * as a restart, not a loss.  Numbers are consumed only by a send that
 * succeeded.
 *
 * With shm_log the publisher also offers its messages in a shared-memory
 * broadcast log (shm/bcastlog.c) at DIR/shm/pub-NAME.sock, for local
 * subscribers opened with shm_from.  Every message that goes to the proxy
 * goes to the log and no other, so the log's sequence is the publisher's
 * seq: a send first checks the log has room (room only grows until our
 * next append), then sends to the proxy, then appends.  Should the append
 * still fail (a reader scribbled its cursor), the log is closed: its
 * readers see the end, never a wrong sequence.
 *
 * Threading: one thread at a time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "bm_shm.h"
#include "proxy_private.h"

#define S_TOPICS_MAX 65536
#define S_SERVICE_MS 5

struct bm_pub {
	void *ctx;                        /* zmq context */
	bool own_ctx;                     /* we made it */
	void *sock;                       /* XPUB, connected */
	char name[BM_NAME_MAX + 1];       /* publisher name */
	uint64_t session;                 /* random instance id */
	uint64_t seq;                     /* last seq used */
	bm__tab_t *tseq;                  /* topic -> last tseq */
	int linger_ms;                    /* on destroy */
	bm_bcastlog_t *log;               /* shm_log: local subscribers' log */
	int64_t serviced_ms;              /* its last service (monotonic) */
};

/* Waits for the proxy's subscription on the XPUB. */
static int
s_wait_attached(bm_pub_t *p, int timeout_ms)
{
	int64_t deadline = bm_mono_ms() + timeout_ms;

	for (;;) {
		zmq_pollitem_t it = {.socket = p->sock, .events = ZMQ_POLLIN};
		int64_t left = deadline - bm_mono_ms();
		uint8_t buf[8];

		if (left <= 0) {
			return BM_ENOBROKER;
		}
		if (zmq_poll(&it, 1, (long)left) < 0) {
			if (zmq_errno() == EINTR) {
				continue;
			}
			return bm__pzerr();
		}
		if ((it.revents & ZMQ_POLLIN) && zmq_recv(p->sock, buf, sizeof buf, 0) >= 1 &&
		    buf[0] == 1) {
			return 0;
		}
	}
}

int
bm_pub_open(const bm_pub_opts_t *opts, bm_pub_t **ret_pub)
{
	bm_pub_opts_t o = opts ? *opts : (bm_pub_opts_t){0};
	char ep[BM_PATH_MAX + 8];
	int rc, one = 1, hwm = o.hwm > 0 ? o.hwm : 100000;
	bm_pub_t *p;

	if (ret_pub == NULL) {
		return -EINVAL;
	}
	if (o.name != NULL && bm_name_check(o.name) < 0) {
		return BM_EBADNAME;
	}
	if ((rc = bm__proxy_endpoint(o.dir, o.endpoint, "pub.sock", ep, sizeof ep)) < 0) {
		return rc;
	}
	p = calloc(1, sizeof *p);
	if (p == NULL) {
		return -ENOMEM;
	}
	if (o.name != NULL) {
		snprintf(p->name, sizeof p->name, "%s", o.name);
	} else {
		snprintf(p->name, sizeof p->name, "pid-%ld", (long)getpid());
	}
	if (sodium_init() < 0) {
		rc = -ENOMEM;
		goto fail;
	}
	randombytes_buf(&p->session, sizeof p->session);
	p->linger_ms = o.linger_ms == 0 ? 2000 : (o.linger_ms < 0 ? 0 : o.linger_ms);
	p->tseq = bm__tab_new();
	p->own_ctx = o.zmq_ctx == NULL;
	p->ctx = o.zmq_ctx ? o.zmq_ctx : zmq_ctx_new();
	if (p->tseq == NULL || p->ctx == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	p->sock = zmq_socket(p->ctx, ZMQ_XPUB);
	if (p->sock == NULL) {
		rc = bm__pzerr();
		goto fail;
	}
	if (zmq_setsockopt(p->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) < 0 ||
	    zmq_setsockopt(p->sock, ZMQ_XPUB_NODROP, &one, sizeof one) < 0 ||
	    zmq_setsockopt(p->sock, ZMQ_LINGER, &p->linger_ms, sizeof p->linger_ms) < 0) {
		rc = bm__pzerr();
		goto fail;
	}
	if ((o.key_file != NULL || o.server_key_file != NULL) &&
	    (rc = bm_curve_client(p->sock, o.key_file, o.server_key_file)) < 0) {
		goto fail;
	}
	if (zmq_connect(p->sock, ep) < 0) {
		rc = bm__pzerr();
		goto fail;
	}
	rc = s_wait_attached(p, o.connect_timeout_ms > 0 ? o.connect_timeout_ms : 3000);
	if (rc < 0) {
		goto fail;
	}
	if (o.shm_log > 0) {
		bm_bcastlog_opts_t lo = {.capacity = o.shm_log, .session = p->session};

		if ((rc = bm_bcastlog_open(o.dir, p->name, &lo, &p->log)) < 0) {
			goto fail;
		}
	}
	*ret_pub = p;
	return 0;
fail:
	p->linger_ms = 0;
	bm_pub_destroy(&p);
	return rc;
}

void
bm_pub_destroy(bm_pub_t **self_p)
{
	bm_pub_t *p;

	if (self_p == NULL || *self_p == NULL) {
		return;
	}
	p = *self_p;
	if (p->sock != NULL) {
		zmq_setsockopt(p->sock, ZMQ_LINGER, &p->linger_ms, sizeof p->linger_ms);
		zmq_close(p->sock);
	}
	if (p->own_ctx && p->ctx != NULL) {
		zmq_ctx_term(p->ctx);
	}
	bm_bcastlog_destroy(&p->log);
	bm__tab_destroy(&p->tseq);
	free(p);
	*self_p = NULL;
}

/*
 * One broadcast: frame 0 is topic + header + body when the body is at most
 * BM__BCAST_INLINE_MAX (one frame costs every hop and every subscriber
 * pipe less than several), else topic + header with the body, zero copy,
 * in frame 1.  The body comes as bytes (data, len) or as a frame (body).
 */
static int
s_publish(bm_pub_t *p, const char *topic, const void *data, size_t len, zmq_msg_t *body)
{
	char t[BM_TOPIC_MAX + 2];
	uint8_t hbuf[BM__HDR_MAX];
	bm__hdr_t h = {0};
	zmq_msg_t f0;
	void **slot;
	bool fresh, inl;
	int tlen, hlen;

	if (p == NULL || topic == NULL) {
		return -EINVAL;
	}
	tlen = bm_topic_normalize(topic, false, t, sizeof t);
	if (tlen < 0) {
		return tlen == -ENOSPC ? BM_EBADNAME : tlen;
	}
	if (bm__tab_size(p->tseq) >= S_TOPICS_MAX && bm__tab_get(p->tseq, t, (size_t)tlen) == NULL) {
		bm__tab_clear(p->tseq);
	}
	slot = bm__tab_slot(p->tseq, t, (size_t)tlen, &fresh);
	if (slot == NULL) {
		return -ENOMEM;
	}
	h.from = p->name;
	h.from_len = strlen(p->name);
	h.session = p->session;
	h.seq = p->seq + 1;
	h.tseq = (uint64_t)(uintptr_t)*slot + 1;
	h.ts_ms = bm_wall_ms();
	hlen = bm__hdr_encode(&h, hbuf, sizeof hbuf);
	if (hlen < 0) {
		return hlen;
	}
	if (body != NULL) {
		data = zmq_msg_data(body);
		len = zmq_msg_size(body);
	}
	if (p->log != NULL) {
		int64_t now = bm_mono_ms();
		int room;

		if (now - p->serviced_ms >= S_SERVICE_MS) {
			(void)bm_bcastlog_service(p->log);
			p->serviced_ms = now;
		}
		/* Before anything leaves: a message the log cannot take now
		 * goes nowhere (BM_EFULL, no sequence used). */
		room = bm_bcastlog_room(p->log, (size_t)tlen, len);
		if (room < 0) {
			return room;
		}
	}
	inl = len <= BM__BCAST_INLINE_MAX;
	if (zmq_msg_init_size(&f0, (size_t)tlen + (size_t)hlen + (inl ? len : 0)) < 0) {
		return -ENOMEM;
	}
	memcpy(zmq_msg_data(&f0), t, (size_t)tlen);
	memcpy((uint8_t *)zmq_msg_data(&f0) + tlen, hbuf, (size_t)hlen);
	if (inl && len > 0) {
		memcpy((uint8_t *)zmq_msg_data(&f0) + tlen + hlen, data, len);
	}
	/* With XPUB_NODROP frame 0 is where a full queue refuses the message;
	 * once it is taken the body follows into the same pipe. */
	if (zmq_msg_send(&f0, p->sock, (inl ? 0 : ZMQ_SNDMORE) | ZMQ_DONTWAIT) < 0) {
		int rc = bm__pzerr();

		zmq_msg_close(&f0);
		return rc == -EAGAIN ? BM_EFULL : rc;
	}
	/* Frame 0 is taken: the message is going.  Into the log now, while
	 * the body (maybe a frame zmq is about to take) is still ours. */
	if (p->log != NULL && bm_bcastlog_publish(p->log, t, h.tseq, data, len, 0) < 0) {
		bm_debug("pub: the shared-memory log refused message %llu; log closed",
		         (unsigned long long)h.seq);
		bm_bcastlog_destroy(&p->log);
	}
	if (!inl) {
		zmq_msg_t f1;
		int rc = 0;

		if (body != NULL) {
			rc = zmq_msg_send(body, p->sock, ZMQ_DONTWAIT);
		} else if (zmq_msg_init_size(&f1, len) < 0) {
			rc = -1;
		} else {
			memcpy(zmq_msg_data(&f1), data, len);
			rc = zmq_msg_send(&f1, p->sock, ZMQ_DONTWAIT);
			if (rc < 0) {
				zmq_msg_close(&f1);
			}
		}
		if (rc < 0) {
			/* The log has it, the proxy not: the log's sequence
			 * would no longer be ours.  Close it. */
			bm_bcastlog_destroy(&p->log);
			return bm__pzerr();
		}
	}
	p->seq = h.seq;
	*slot = (void *)(uintptr_t)h.tseq;
	return 0;
}

int
bm_pub_service(bm_pub_t *p)
{
	if (p == NULL) {
		return -EINVAL;
	}
	if (p->log == NULL) {
		return 0;
	}
	p->serviced_ms = bm_mono_ms();
	return bm_bcastlog_service(p->log);
}

int
bm_pub_shm_fd(const bm_pub_t *p)
{
	if (p == NULL) {
		return -EINVAL;
	}
	return p->log != NULL ? bm_bcastlog_fd(p->log) : -ENOENT;
}

int
bm_pub_send_frame(bm_pub_t *p, const char *topic, zmq_msg_t *body)
{
	if (body == NULL) {
		return -EINVAL;
	}
	return s_publish(p, topic, NULL, 0, body);
}

int
bm_pub_send(bm_pub_t *p, const char *topic, const void *body, size_t len)
{
	if (body == NULL && len > 0) {
		return -EINVAL;
	}
	return s_publish(p, topic, body, len, NULL);
}

void *
bm_pub_socket(bm_pub_t *p)
{
	return p ? p->sock : NULL;
}

const char *
bm_pub_name(const bm_pub_t *p)
{
	return p ? p->name : NULL;
}

uint64_t
bm_pub_count(const bm_pub_t *p)
{
	return p ? p->seq : 0;
}

bm_bcastlog_t *
bm__pub_log(bm_pub_t *p)
{
	return p != NULL ? p->log : NULL;
}

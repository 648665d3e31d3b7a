/*
 * bridge_nats.c - libnats for the bridge, with the Debian pitfalls in one
 * place.
 *
 * Pitfalls of libnats 3.4.1 and nats-server 2.9.10 (Debian 12) handled here:
 *
 *  - js_AddStream dereferences an external source's DeliverPrefix: a NULL
 *    one segfaults (known for 3.4.1).  The bridge makes no sourced streams
 *    (it publishes straight into the receiving host's stream); one added
 *    later must set DeliverPrefix to "".
 *  - A no-wait fetch on an empty consumer returns NATS_TIMEOUT, as does a
 *    fetch that waited in vain (one more reason not to use Fetch, below:
 *    our puller reads the 404/408 status messages itself).
 *  - Durations (MaxAge, Duplicates, AckWait, a KV bucket's TTL) are
 *    nanoseconds: BM_BN_MS() converts.
 *  - nats-server 2.9.10 has no `sync_interval`: JetStream syncs its files
 *    every 2 minutes, so a stored message can be lost on power loss.  The
 *    bridge therefore never treats a PubAck as delivery: the sender's
 *    outbox keeps the durable copy until the remote receiver's ACK is back
 *    (docs/multihost.md).
 *  - An asynchronous publish has no timeout in libnats 3.4.1: when its
 *    PubAck is lost (the hub killed with the message on the way) it stays
 *    pending for ever, and once MaxPending are pending every publish
 *    stalls and fails.  bm_bn_take_pending() takes them all back so the
 *    caller can treat them as failed.
 *  - natsSubscription_Fetch returns only when its batch is full or its
 *    wait is over, and when messages of an earlier pull request arrive
 *    after that request's fetch gave up, a later fetch collects more than
 *    its batch and writes past its own array (heap corruption; seen as
 *    "malloc(): unaligned fastbin chunk" and under ASan in the bridge).
 *    So the bridge does not use it: bm_bn_puller sends its own pull
 *    requests ($JS.API.CONSUMER.MSG.NEXT) to an inbox it reads one message
 *    at a time — each message is handed over as it arrives, a request of
 *    256 keeps a stream flowing — and acks by publishing to the reply
 *    subject.
 *  - js_AddStream on an existing stream with another config fails with
 *    "stream name already in use": we update it instead.
 *
 * Threading: libnats objects are thread safe; a puller belongs to the one
 * thread that reads from it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge_nats.h"

int
bm_bn_connect(const char *url, const char *name, natsConnection **ret_nc)
{
	natsOptions *o = NULL;
	natsConnection *nc = NULL;
	natsStatus s;

	s = natsOptions_Create(&o);
	if (s == NATS_OK) {
		s = natsOptions_SetURL(o, url);
	}
	if (s == NATS_OK) {
		s = natsOptions_SetName(o, name);
	}
	if (s == NATS_OK) {
		s = natsOptions_SetMaxReconnect(o, -1);
	}
	if (s == NATS_OK) {
		s = natsOptions_SetReconnectWait(o, 100);
	}
	if (s == NATS_OK) {
		s = natsOptions_SetRetryOnFailedConnect(o, true, NULL, NULL);
	}
	if (s == NATS_OK) {
		s = natsOptions_SetMaxPendingMsgs(o, 1000000);
	}
	if (s == NATS_OK) {
		s = natsConnection_Connect(&nc, o);
		/* Retrying in the background: not connected yet, still ours. */
		if (s == NATS_NOT_YET_CONNECTED) {
			s = NATS_OK;
		}
	}
	natsOptions_Destroy(o);
	if (s != NATS_OK) {
		natsConnection_Destroy(nc);
		return -EIO;
	}
	*ret_nc = nc;
	return 0;
}

int
bm_bn_stream(jsCtx *js, const char *name, const char *subject, int64_t max_age_ms,
             int64_t dup_ms, char *why, size_t whylen)
{
	jsStreamConfig sc;
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	const char *subjects[1] = {subject};
	natsStatus s;

	jsStreamConfig_Init(&sc);
	sc.Name = name;
	sc.Subjects = subjects;
	sc.SubjectsLen = 1;
	sc.Storage = js_FileStorage;
	sc.MaxAge = BM_BN_MS(max_age_ms);
	sc.Duplicates = BM_BN_MS(dup_ms);
	s = js_AddStream(&si, js, &sc, NULL, &jerr);
	if (s != NATS_OK && jerr == JSStreamNameExistErr) {
		s = js_UpdateStream(&si, js, &sc, NULL, &jerr);
	}
	jsStreamInfo_Destroy(si);
	if (s != NATS_OK) {
		snprintf(why, whylen, "stream %s: %s (JetStream error %d)", name,
		         nats_GetLastError(NULL) ? nats_GetLastError(NULL) : natsStatus_GetText(s),
		         (int)jerr);
		return -EIO;
	}
	return 0;
}

const char *
bm_bn_header(natsMsg *m, const char *key)
{
	const char *v = NULL;

	return natsMsgHeader_Get(m, key, &v) == NATS_OK ? v : NULL;
}

int
bm_bn_take_pending(jsCtx *js, natsMsgList *ret_list)
{
	natsStatus s;

	memset(ret_list, 0, sizeof *ret_list);
	s = js_PublishAsyncGetPendingList(ret_list, js);
	if (s == NATS_NOT_FOUND) {
		return 0; /* nothing pending */
	}
	return s == NATS_OK ? ret_list->Count : -EIO;
}

int
bm_bn_consumer(jsCtx *js, const char *stream, const char *durable, int64_t ack_wait_ms,
               int64_t max_ack_pending, char *why, size_t whylen)
{
	jsConsumerConfig cc;
	jsConsumerInfo *ci = NULL;
	jsErrCode jerr = 0;
	natsStatus s;

	jsConsumerConfig_Init(&cc);
	cc.Durable = durable;
	cc.AckPolicy = js_AckExplicit;
	cc.AckWait = BM_BN_MS(ack_wait_ms);
	cc.MaxAckPending = max_ack_pending;
	cc.MaxDeliver = -1;
	s = js_AddConsumer(&ci, js, stream, &cc, NULL, &jerr);
	jsConsumerInfo_Destroy(ci);
	if (s != NATS_OK && jerr != JSConsumerNameExistErr) {
		snprintf(why, whylen, "consumer %s on %s: %s (JetStream error %d)", durable, stream,
		         nats_GetLastError(NULL) ? nats_GetLastError(NULL) : natsStatus_GetText(s),
		         (int)jerr);
		return -EIO;
	}
	return 0;
}

struct bm_bn_puller {
	natsConnection *nc;      /* not owned */
	natsSubscription *inbox; /* where the pulled messages come */
	char inbox_subj[128];    /* its subject */
	char next[256];          /* $JS.API.CONSUMER.MSG.NEXT.<stream>.<durable> */
	int left;                /* messages the request in force may still bring */
	int64_t until;           /* mono ms when it expires */
};

int
bm_bn_puller_open(natsConnection *nc, const char *stream, const char *durable,
                  bm_bn_puller_t **ret_p)
{
	bm_bn_puller_t *p = calloc(1, sizeof *p);
	natsInbox *inbox = NULL;

	if (p == NULL) {
		return -ENOMEM;
	}
	p->nc = nc;
	snprintf(p->next, sizeof p->next, "$JS.API.CONSUMER.MSG.NEXT.%s.%s", stream, durable);
	if (natsInbox_Create(&inbox) != NATS_OK) {
		free(p);
		return -ENOMEM;
	}
	snprintf(p->inbox_subj, sizeof p->inbox_subj, "%s", (const char *)inbox);
	natsInbox_Destroy(inbox);
	if (natsConnection_SubscribeSync(&p->inbox, nc, p->inbox_subj) != NATS_OK ||
	    natsSubscription_SetPendingLimits(p->inbox, -1, -1) != NATS_OK) {
		bm_bn_puller_destroy(&p);
		return -EIO;
	}
	*ret_p = p;
	return 0;
}

void
bm_bn_puller_destroy(bm_bn_puller_t **self_p)
{
	bm_bn_puller_t *p = self_p ? *self_p : NULL;

	if (p == NULL) {
		return;
	}
	natsSubscription_Destroy(p->inbox);
	free(p);
	*self_p = NULL;
}

#define S_PULL_BATCH 256
#define S_PULL_EXPIRES_MS 500

int
bm_bn_puller_next(bm_bn_puller_t *p, int wait_ms, natsMsg **ret_msg)
{
	int64_t now = nats_Now();
	natsMsg *m = NULL;
	const char *status = NULL;
	natsStatus s;

	if (p->left <= 0 || now >= p->until + 50) {
		char req[96];

		/* A new request once the last is used up or expired. */
		snprintf(req, sizeof req, "{\"batch\":%d,\"expires\":%lld}", S_PULL_BATCH,
		         (long long)BM_BN_MS(S_PULL_EXPIRES_MS));
		if (natsConnection_PublishRequestString(p->nc, p->next, p->inbox_subj, req) !=
		    NATS_OK) {
			return -EIO;
		}
		p->left = S_PULL_BATCH;
		p->until = now + S_PULL_EXPIRES_MS;
	}
	if (p->until + 50 - now < wait_ms) {
		wait_ms = (int)(p->until + 50 - now);
	}
	s = natsSubscription_NextMsg(&m, p->inbox, wait_ms > 1 ? wait_ms : 1);
	if (s == NATS_TIMEOUT) {
		return 0;
	}
	if (s != NATS_OK) {
		return -EIO;
	}
	if (natsMsg_GetDataLength(m) == 0 && natsMsgHeader_Get(m, "Status", &status) == NATS_OK) {
		/* 404/408/409: the request is over (empty, expired, or the
		 * consumer changed); the next call sends another. */
		p->left = 0;
		natsMsg_Destroy(m);
		return 0;
	}
	p->left--;
	*ret_msg = m;
	return 1;
}

void
bm_bn_ack(natsConnection *nc, natsMsg *m)
{
	const char *reply = natsMsg_GetReply(m);

	if (reply != NULL) {
		(void)natsConnection_PublishString(nc, reply, "+ACK");
	}
}

void
bm_bn_nak(natsConnection *nc, natsMsg *m, int64_t delay_ms)
{
	const char *reply = natsMsg_GetReply(m);
	char buf[64];

	if (reply != NULL) {
		snprintf(buf, sizeof buf, "-NAK {\"delay\":%lld}", (long long)BM_BN_MS(delay_ms));
		(void)natsConnection_PublishString(nc, reply, buf);
	}
}

/*
 * bridge_nats.c - libnats for the bridge, with the Debian pitfalls in one
 * place.
 *
 * Pitfalls of libnats 3.4.1 and nats-server 2.9.10 (Debian 12) handled here:
 *
 *  - js_AddStream dereferences an external source's DeliverPrefix: a NULL
 *    one segfaults.  Any jsExternalStream we make sets it to "".
 *  - A no-wait fetch on an empty consumer returns NATS_TIMEOUT, as does a
 *    fetch that waited in vain: bm_bn_fetch() reports 0 messages for both.
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
 *  - js_AddStream on an existing stream with another config fails with
 *    "stream name already in use": we update it instead.
 *
 * Threading: libnats objects are thread safe; these helpers keep no state.
 */
#include <errno.h>
#include <stdio.h>
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

int
bm_bn_pull(jsCtx *js, const char *stream, const char *subject, const char *durable,
           int64_t ack_wait_ms, int64_t max_ack_pending, natsSubscription **ret_sub, char *why,
           size_t whylen)
{
	jsSubOptions so;
	jsErrCode jerr = 0;
	natsStatus s;

	jsSubOptions_Init(&so);
	so.Stream = stream;
	so.Config.Durable = durable;
	so.Config.AckPolicy = js_AckExplicit;
	so.Config.AckWait = BM_BN_MS(ack_wait_ms);
	so.Config.MaxAckPending = max_ack_pending;
	so.Config.MaxDeliver = -1;
	s = js_PullSubscribe(ret_sub, js, subject, durable, NULL, &so, &jerr);
	if (s != NATS_OK) {
		snprintf(why, whylen, "consumer %s on %s: %s (JetStream error %d)", durable, stream,
		         nats_GetLastError(NULL) ? nats_GetLastError(NULL) : natsStatus_GetText(s),
		         (int)jerr);
		return -EIO;
	}
	return 0;
}

int
bm_bn_fetch(natsSubscription *sub, int batch, int timeout_ms, natsMsgList *ret_list)
{
	jsErrCode jerr = 0;
	natsStatus s;

	memset(ret_list, 0, sizeof *ret_list);
	s = natsSubscription_Fetch(ret_list, sub, batch, timeout_ms, &jerr);
	if (s == NATS_OK) {
		return ret_list->Count;
	}
	natsMsgList_Destroy(ret_list);
	memset(ret_list, 0, sizeof *ret_list);
	/* Nothing there (or nothing yet): the one expected outcome. */
	return s == NATS_TIMEOUT ? 0 : -EIO;
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

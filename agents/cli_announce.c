/*
 * cli_announce.c - `beast blob send` announces each blob over the mesh.
 *
 * The bulk channel needs no beastd; when one is running and the receiver
 * is also a mesh agent, the sender first sends it a "blob.announce"
 * message so it knows what arrives on which channel.  The body is one JSON
 * object: {"name", "size", "content", "channel"}.  Best effort: no beastd,
 * no such agent or no ACK in time simply means no announcement.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_blob.h"

#define S_WAIT_MS 2000

int
bm_cli_blob_mesh_announce(const char *dir, const char *as, const char *to, const char *name,
                          unsigned long long size, const char *content)
{
	char me[BM_NAME_MAX + 1], body[1024];
	bm_client_opts_t o = {.dir = dir, .name = me, .connect_timeout_ms = 500};
	bm_send_opts_t so = {.to = to, .type = "blob.announce"};
	bm_client_t *c = NULL;
	bm_id_t id;
	FILE *f;
	int64_t deadline;
	int rc;

	/* The shm name may be taken on the mesh by the same program: use a
	 * name of our own unless --as was given. */
	snprintf(me, sizeof me, "%s", as ? as : "");
	if (as == NULL || bm_name_check(as) < 0) {
		snprintf(me, sizeof me, "blob-send-%ld", (long)getpid());
	}
	bm_cli_remote(&o);
	if (bm_name_check(to) < 0 || (rc = bm_client_open(&o, &c)) < 0) {
		return BM_ENOBROKER;
	}
	f = fmemopen(body, sizeof body, "w");
	if (f == NULL) {
		bm_client_destroy(&c);
		return -ENOMEM;
	}
	fputs("{\"name\":", f);
	bm_cli_json_str(f, name, strlen(name));
	fprintf(f, ",\"size\":%llu,\"content\":\"%s\",\"channel\":\"shm/%s.sock\"}", size, content,
	        to);
	fclose(f);
	rc = bm_client_send(c, &so, body, strlen(body), &id);
	deadline = bm_mono_ms() + S_WAIT_MS;
	while (rc == 0) {
		bm_event_t ev;
		int64_t left = deadline - bm_mono_ms();

		if (left <= 0 || bm_client_recv(c, (int)left, &ev) < 0) {
			rc = -ETIMEDOUT;
			break;
		}
		if ((ev.kind == BM_EV_ACK || ev.kind == BM_EV_NACK) && bm_id_equal(&ev.id, &id)) {
			rc = ev.kind == BM_EV_ACK ? 0 : ev.code;
			bm_event_clear(&ev);
			break;
		}
		bm_event_clear(&ev);
	}
	bm_client_destroy(&c);
	return rc == 0 ? 0 : (rc > 0 ? -rc : rc);
}

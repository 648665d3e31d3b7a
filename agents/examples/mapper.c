/*
 * mapper - consumes point clouds from the bulk channel: checks each
 * against its mesh announcement, voxel-downsamples it and computes its
 * bounds, and reports the result through the mesh.
 *
 *   beast-mapper [--dir DIR] [--name NAME] [--report-to MONITOR] [--voxel M]
 *
 * A blob and its announcement ("blob.announce", JSON with name and CRC32C)
 * travel separately — shared memory and the mesh — and may arrive in
 * either order; the mapper pairs them by name.  Each pair becomes one
 * "map.result" to the monitor: name, points, voxels, bounds, and whether
 * the checksum matched.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "example.h"

#define S_PAIRS 64

typedef struct {
	char name[128];     /* blob name */
	bool announced;     /* its announcement arrived */
	uint32_t ann_crc;   /* CRC32C announced */
	bool received;      /* the blob arrived */
	char result[512];   /* what the blob gave, less the check */
	uint32_t crc;       /* CRC32C of what arrived */
} s_pair_t;

static s_pair_t s_pairs[S_PAIRS];
static double s_voxel = 0.05;
static unsigned long s_mapped, s_bad;
static const ex_opts_t *s_opts;

static s_pair_t *
s_pair(const char *name)
{
	s_pair_t *free_slot = NULL;

	for (int i = 0; i < S_PAIRS; i++) {
		if (strcmp(s_pairs[i].name, name) == 0) {
			return &s_pairs[i];
		}
		if (s_pairs[i].name[0] == '\0' && free_slot == NULL) {
			free_slot = &s_pairs[i];
		}
	}
	if (free_slot == NULL) {
		free_slot = &s_pairs[0]; /* an example: the oldest pair goes */
	}
	memset(free_slot, 0, sizeof *free_slot);
	snprintf(free_slot->name, sizeof free_slot->name, "%s", name);
	return free_slot;
}

/* Both halves here: report and forget. */
static void
s_settle(bm_agent_t *a, s_pair_t *p)
{
	bm_agent_send_opts_t so = {.type = "map.result"};
	char body[768];
	bool ok = p->ann_crc == p->crc;

	if (!p->announced || !p->received) {
		return;
	}
	snprintf(body, sizeof body, "name %s\ncrc %s\n%s", p->name, ok ? "ok" : "MISMATCH", p->result);
	s_mapped++;
	s_bad += !ok;
	if (s_opts->report_to != NULL) {
		(void)bm_agent_send(a, s_opts->report_to, &so, body, strlen(body), NULL);
	}
	p->name[0] = '\0';
}

static int
s_on_announce(bm_agent_t *a, bm_msg_t *m, void *arg)
{
	char buf[1024], name[128] = "";
	const char *p;

	(void)arg;
	snprintf(buf, sizeof buf, "%.*s", (int)bm_msg_size(m), (const char *)bm_msg_data(m));
	if ((p = strstr(buf, "\"name\":\"")) == NULL || sscanf(p + 8, "%127[^\"]", name) != 1 ||
	    (p = strstr(buf, "\"crc\":\"")) == NULL) {
		return BM_EPROTO;
	}
	s_pair(name)->announced = true;
	s_pair(name)->ann_crc = (uint32_t)strtoul(p + 7, NULL, 16);
	s_settle(a, s_pair(name));
	return 0;
}

/* Voxel downsampling by sorting voxel keys: the number of distinct
 * occupied voxels of edge s_voxel, and the bounds. */
static int
s_cmp(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

static int
s_on_blob(bm_agent_t *a, const char *from, bm_blob_t *blob, void *arg)
{
	bm_cloud_t *c = NULL;
	s_pair_t *p = s_pair(bm_blob_info(blob)->name);
	float lo[3] = {INFINITY, INFINITY, INFINITY}, hi[3] = {-INFINITY, -INFINITY, -INFINITY};
	uint64_t n, voxels = 0, *keys;
	size_t stride;
	const uint8_t *pts;

	(void)from;
	(void)arg;
	p->received = true;
	p->crc = bm_crc32c(0, bm_blob_data(blob), bm_blob_size(blob));
	if (bm_cloud_parse(bm_blob_data(blob), bm_blob_size(blob), &c) < 0 ||
	    bm_cloud_find(c, "x") != 0) {
		snprintf(p->result, sizeof p->result, "error not a point cloud\n");
		bm_cloud_destroy(&c);
		s_settle(a, p);
		return 0;
	}
	n = bm_cloud_count(c);
	stride = bm_cloud_stride(c);
	pts = bm_cloud_data(c);
	keys = malloc((n ? n : 1) * sizeof *keys);
	for (uint64_t i = 0; keys != NULL && i < n; i++) {
		float v[3];

		memcpy(v, pts + i * stride, sizeof v); /* x y z f32 lead */
		for (int k = 0; k < 3; k++) {
			lo[k] = v[k] < lo[k] ? v[k] : lo[k];
			hi[k] = v[k] > hi[k] ? v[k] : hi[k];
		}
		keys[i] = ((uint64_t)(int64_t)floor(v[0] / s_voxel) & 0x1fffff) << 42 |
		          ((uint64_t)(int64_t)floor(v[1] / s_voxel) & 0x1fffff) << 21 |
		          ((uint64_t)(int64_t)floor(v[2] / s_voxel) & 0x1fffff);
	}
	if (keys != NULL) {
		qsort(keys, n, sizeof *keys, s_cmp);
		for (uint64_t i = 0; i < n; i++) {
			voxels += i == 0 || keys[i] != keys[i - 1];
		}
	}
	free(keys);
	snprintf(p->result, sizeof p->result,
	         "points %llu\nvoxels %llu\nbounds %.3f %.3f %.3f %.3f %.3f %.3f\n",
	         (unsigned long long)n, (unsigned long long)voxels, lo[0], lo[1], lo[2], hi[0], hi[1],
	         hi[2]);
	bm_cloud_destroy(&c);
	s_settle(a, p);
	return 0;
}

static void
s_extra(bm_agent_t *a, char *buf, size_t cap)
{
	(void)a;
	snprintf(buf, cap, "mapped %lu\nbad %lu\n", s_mapped, s_bad);
}

int
main(int argc, char **argv)
{
	ex_opts_t o;
	bm_agent_t *a;
	const char *caps[] = {"map", NULL};

	argc = ex_parse(argc, argv, &o, "mapper");
	for (int i = 1; i + 1 < argc; i++) {
		if (strcmp(argv[i], "--voxel") == 0) {
			s_voxel = atof(argv[++i]);
		}
	}
	s_opts = &o;
	if ((a = ex_open(&o, caps)) == NULL) {
		return 1;
	}
	if (bm_agent_on_blob(a, s_on_blob, NULL) < 0 ||
	    bm_agent_on_message(a, "blob.announce", s_on_announce, NULL) < 0) {
		bm_log(BM_LOG_ERROR, "cannot listen for blobs as '%s'", o.name);
		bm_agent_destroy(&a);
		return 1;
	}
	ex_run(a, &o, s_extra);
	return ex_finish(&a, &o, s_extra) == 0 ? 0 : 1;
}

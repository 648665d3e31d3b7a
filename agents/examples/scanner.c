/*
 * scanner - produces point clouds and streams them to a mapper over the
 * bulk channel (shared memory), announcing each through the mesh.
 *
 *   beast-scanner [--dir DIR] [--name NAME] [--report-to MONITOR]
 *                 [--to MAPPER] [--clouds N] [--points P] [FILE.ply|FILE.pcd ...]
 *
 * Without files it makes N synthetic clouds of P points (0 = until
 * stopped); with files it sends each file's cloud.  A cloud counts as
 * sent once the mapper confirmed it arrived intact; the count is kept in
 * the agent's state directory, so a scanner killed and restarted goes on
 * where it was and resends only the cloud it was killed in.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "example.h"

static unsigned long s_done; /* clouds confirmed, persisted */
static char s_mark[BM_PATH_MAX];

static void
s_extra(bm_agent_t *a, char *buf, size_t cap)
{
	(void)a;
	snprintf(buf, cap, "clouds %lu\n", s_done);
}

/* Remembers the count across restarts: write a new file, rename it. */
static void
s_save(void)
{
	char tmp[BM_PATH_MAX + 8];
	FILE *f;

	snprintf(tmp, sizeof tmp, "%s.new", s_mark);
	if ((f = fopen(tmp, "w")) != NULL) {
		fprintf(f, "%lu\n", s_done);
		if (fclose(f) == 0) {
			rename(tmp, s_mark);
		}
	}
}

static bm_cloud_t *
s_load(const char *path)
{
	bm_cloud_t *c = NULL;
	struct stat st;
	void *p;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0 || st.st_size == 0) {
		if (fd >= 0) {
			close(fd);
		}
		return NULL;
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		return NULL;
	}
	(void)bm_cloud_parse(p, (size_t)st.st_size, &c);
	munmap(p, (size_t)st.st_size);
	return c;
}

int
main(int argc, char **argv)
{
	const char *to = "mapper";
	char state[BM_PATH_MAX];
	unsigned long clouds = 8, points = 200000;
	char **files = NULL;
	int nfiles = 0, rc = 0;
	ex_opts_t o;
	bm_agent_t *a;
	FILE *f;

	argc = ex_parse(argc, argv, &o, "scanner");
	files = calloc((size_t)argc, sizeof *files);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--to") == 0 && i + 1 < argc) {
			to = argv[++i];
		} else if (strcmp(argv[i], "--clouds") == 0 && i + 1 < argc) {
			clouds = strtoul(argv[++i], NULL, 10);
		} else if (strcmp(argv[i], "--points") == 0 && i + 1 < argc) {
			points = strtoul(argv[++i], NULL, 10);
		} else if (files != NULL) {
			files[nfiles++] = argv[i];
		}
	}
	if (nfiles > 0) {
		clouds = (unsigned long)nfiles;
	}
	if ((a = ex_open(&o, NULL)) == NULL) {
		free(files);
		return 1;
	}
	/* The same state dir as every program's (bm_statedir_resolve), else
	 * the working directory. */
	if (bm_statedir_resolve(state) < 0 || bm_mkdirs(state) < 0) {
		snprintf(state, sizeof state, ".");
	}
	if (snprintf(s_mark, sizeof s_mark, "%s/%s.clouds", state, o.name) >= (int)sizeof s_mark) {
		snprintf(s_mark, sizeof s_mark, "%s.clouds", o.name);
	}
	if ((f = fopen(s_mark, "r")) != NULL) {
		if (fscanf(f, "%lu", &s_done) != 1) {
			s_done = 0;
		}
		fclose(f);
	}
	while (!bm_agent_stopped(a) && (clouds == 0 || s_done < clouds)) {
		char name[64];
		bm_cloud_t *cloud = NULL;

		if (nfiles > 0) {
			cloud = s_load(files[s_done]);
			snprintf(name, sizeof name, "%.40s", strrchr(files[s_done], '/')
			         ? strrchr(files[s_done], '/') + 1 : files[s_done]);
		} else {
			(void)bm_cloud_generate(points, BM_CLOUD_XYZ_RGB, s_done + 1, &cloud);
			snprintf(name, sizeof name, "%s-cloud-%lu.ply", o.name, s_done);
		}
		if (cloud == NULL) {
			bm_log(BM_LOG_ERROR, "cannot read a point cloud from %s", files[s_done]);
			rc = -1;
			break;
		}
		rc = bm_agent_send_cloud(a, to, name, cloud, 10000);
		bm_cloud_destroy(&cloud);
		if (rc == 0) {
			s_done++;
			s_save();
		} else {
			/* The mapper is not there (yet): wait a little, in the loop. */
			bm_debug("cloud %s not sent: %s", name, bm_strerror(rc));
			(void)bm_agent_step(a, 100);
		}
		rc = 0;
		(void)bm_agent_step(a, 0);
		ex_tick(a, &o, s_extra);
	}
	free(files);
	if (ex_finish(&a, &o, s_extra) < 0) {
		rc = -1;
	}
	return rc == 0 ? 0 : 1;
}

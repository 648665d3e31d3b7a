/*
 * fuzz_cloud.c - libFuzzer target for the point-cloud readers (binary PLY
 * and PCD): any file must parse or be refused without a crash, a leak or an
 * out-of-bounds read, and whatever parses must survive a write and a
 * re-parse with the same point count.
 */
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bm_shm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bm_cloud_t *c = NULL, *again = NULL;
	char *buf = NULL;
	off_t end;
	int fd;

	if (bm_cloud_parse(data, size, &c) != 0) {
		return 0;
	}
	/* Round trip through a memfd: write PLY, parse it back. */
	fd = memfd_create("fuzz-cloud", MFD_CLOEXEC);
	if (fd < 0 || bm_cloud_write_ply(c, fd) != 0 || (end = lseek(fd, 0, SEEK_END)) <= 0 ||
	    (buf = malloc((size_t)end)) == NULL || pread(fd, buf, (size_t)end, 0) != end) {
		abort();
	}
	if (bm_cloud_parse(buf, (size_t)end, &again) != 0 ||
	    bm_cloud_count(again) != bm_cloud_count(c)) {
		abort();
	}
	close(fd);
	free(buf);
	bm_cloud_destroy(&again);
	bm_cloud_destroy(&c);
	return 0;
}

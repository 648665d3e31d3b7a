/*
 * shm_blob_cli.c - test driver for `beast blob`: runs bm_cli_blob() as the
 * beast program would, so the CLI is tested as a process without the mesh.
 *   shm-blob-cli [--dir DIR] blob recv|send ...
 */
#include <string.h>

#include "bm_common.h"
#include "cli_blob.h"

int
main(int argc, char **argv)
{
	const char *dir = NULL;
	int i = 1;

	bm_log_set_ident("beast");
	if (i + 1 < argc && strcmp(argv[i], "--dir") == 0) {
		dir = argv[i + 1];
		i += 2;
	}
	if (i >= argc) {
		return 2;
	}
	return bm_cli_blob(argc - i, argv + i, dir);
}

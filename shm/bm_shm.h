/*
 * bm_shm.h - bulk channel: SPSC rings in shared memory with Unix-socket
 * doorbells, zero-copy blobs.  (Being built; see docs/shm.md.)
 */
#ifndef BM_SHM_H
#define BM_SHM_H

#include "bm_common.h"

#endif

/*
 * beastmesh.h - the whole public API of libbeastmesh in one include.
 */
#ifndef BEASTMESH_H
#define BEASTMESH_H

#include "bm_common.h"
#include "bm_shm.h"
#include "bm_mesh.h"
#include "bm_proxy.h"
#include "bm_agent.h"

#endif

/*
 * version.c - the release this library was built from.
 *
 * BM_VERSION comes from meson's project(version:) through a define on this
 * file alone (common/meson.build), so a version bump rebuilds one object.
 * Every program prints it for --version as "NAME beastmesh VERSION".
 */
#include "bm_common.h"

#ifndef BM_VERSION
#error "BM_VERSION must be defined by the build (common/meson.build)"
#endif

const char *
bm_version(void)
{
	return BM_VERSION;
}

/*
 * bm_proxy.h - broadcast proxy (XSUB -> XPUB) for thought branches.
 * (Planned; see docs/architecture.md.)
 */
#ifndef BM_PROXY_H
#define BM_PROXY_H

#include "bm_common.h"

#endif

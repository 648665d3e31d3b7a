/*
 * err.c - names and texts for beastmesh error codes.
 *
 * One X-macro list in bm_common.h makes the enum and both tables here, so a
 * code can never be added without its text.  Negative errno values fall
 * through to strerror()/strerrorname_np().
 */
#include <errno.h>
#include <string.h>

#include "bm_common.h"

static const char *const s_text[] = {
#define S_TEXT(name, text) text,
	BM_ERROR_LIST(S_TEXT)
#undef S_TEXT
};

static const char *const s_name[] = {
#define S_NAME(name, text) "BM_E" #name,
	BM_ERROR_LIST(S_NAME)
#undef S_NAME
};

static int
s_index(int err)
{
	if (err > BM_E__FIRST && err < BM_E__LAST) {
		return err - BM_E__FIRST - 1;
	}
	return -1;
}

const char *
bm_strerror(int err)
{
	int i = s_index(err);

	if (i >= 0) {
		return s_text[i];
	}
	if (err == 0) {
		return "success";
	}
	/* strerror() is not thread safe in theory; glibc's returns static text
	 * for every known code, which is all we hand it. */
	return strerror(err < 0 ? -err : err);
}

const char *
bm_err_name(int err)
{
	int i = s_index(err);
	const char *name;

	if (i >= 0) {
		return s_name[i];
	}
	name = strerrorname_np(err < 0 ? -err : err);
	return name ? name : "EUNKNOWN";
}

/*
 * thinker - follows thought trees and scores branches for planners.
 *
 *   beast-thinker [--dir DIR] [--name NAME] [--report-to MONITOR]
 *
 * It follows every tree under "tot/" (each broadcast branch is one step
 * of a planner's search) and answers "think.score" requests sent to
 * anycast @think: the body is a puzzle state (puzzle.h), the reply the
 * score — an estimate of the moves left.  s_score() is the plug-in point:
 * here a deterministic heuristic (the Manhattan distance, which never
 * overestimates, so the planner's answer stays optimal); an agent backed
 * by a language model would ask the model there instead.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "example.h"
#include "puzzle.h"

static unsigned long s_followed; /* branches seen on tot/ */
static unsigned long s_scored;   /* requests answered */

/* The plug-in point: how promising is this state?  Lower is better. */
static int
s_score(const char *state)
{
	int h = 0;

	for (int i = 0; i < 9; i++) {
		int t = state[i] - '1'; /* where tile state[i] belongs */

		if (state[i] != '0') {
			h += abs(i / 3 - t / 3) + abs(i % 3 - t % 3);
		}
	}
	return h;
}

static int
s_on_score(bm_agent_t *a, bm_msg_t *req, void *arg)
{
	char state[10], reply[16];

	(void)arg;
	snprintf(state, sizeof state, "%.*s", (int)bm_msg_size(req), (const char *)bm_msg_data(req));
	if (!pz_valid(state)) {
		return BM_EPROTO; /* NACKed: the planner sent nonsense */
	}
	snprintf(reply, sizeof reply, "%d", s_score(state));
	s_scored++;
	return bm_agent_reply(a, req, "think.score", reply, strlen(reply));
}

static void
s_on_branch(bm_agent_t *a, bm_bcast_t *b, void *arg)
{
	(void)a;
	(void)b;
	(void)arg;
	s_followed++;
}

static void
s_extra(bm_agent_t *a, char *buf, size_t cap)
{
	(void)a;
	snprintf(buf, cap, "scored %lu\nfollowed %lu\n", s_scored, s_followed);
}

int
main(int argc, char **argv)
{
	const char *caps[] = {"think", NULL};
	ex_opts_t o;
	bm_agent_t *a;

	ex_parse(argc, argv, &o, "thinker");
	if ((a = ex_open(&o, caps)) == NULL) {
		return 1;
	}
	bm_agent_on_request(a, "think.score", s_on_score, NULL);
	if (bm_agent_subscribe(a, "tot", s_on_branch, NULL) < 0) {
		bm_log(BM_LOG_WARN, "cannot follow tot/: is beastd's broadcast proxy up?");
	}
	ex_run(a, &o, s_extra);
	return ex_finish(&a, &o, s_extra) == 0 ? 0 : 1;
}

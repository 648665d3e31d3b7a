/*
 * planner - grows a tree of thoughts towards the solution of a puzzle,
 * with thinkers scoring the branches.
 *
 *   beast-planner [--dir DIR] [--name NAME] [--report-to MONITOR]
 *                 [--tree ID] [--width N] START
 *
 * START is an 8-puzzle state (puzzle.h).  Each round the planner takes
 * the N most promising open branches (lowest moves-so-far + score),
 * expands each by the legal moves, prunes children already reached by a
 * path at least as short, broadcasts every new branch on
 * tot/<tree>/d<depth>/n<branch>/ and asks any thinker (@think) to score
 * it.  Scored branches join the open set; the first solved branch taken
 * as the most promising one is the answer (best-first search: with a
 * score that never overestimates, the answer is a shortest path).  The
 * answer goes to the monitor ("tot.answer": tree, start, moves, path) and
 * out on tot/<tree>/answer/.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "example.h"
#include "puzzle.h"

#define S_TABLE (1u << 19) /* > 181,440 reachable states */

typedef struct {
	char s[10];   /* state */
	int parent;   /* node index, -1 for the root */
	int g;        /* moves from the start */
	int h;        /* the thinkers' score */
	char move;    /* move that led here */
} s_node_t;

static s_node_t *s_nodes;
static int s_nnodes, s_capnodes;
static int *s_heap, s_nheap;                  /* open branches, best first */
static uint32_t s_keys[S_TABLE];              /* reached states ... */
static int s_best[S_TABLE];                   /* ... and their shortest g */
static int s_outstanding, s_goal = -1;
static unsigned long s_expanded, s_pruned, s_retries;
static const char *s_tree = "1";
static char s_answer[256];

static bool
s_less(int a, int b)
{
	int fa = s_nodes[a].g + s_nodes[a].h, fb = s_nodes[b].g + s_nodes[b].h;

	return fa != fb ? fa < fb : s_nodes[a].h < s_nodes[b].h;
}

static void
s_push(int n)
{
	int i = s_nheap++;

	while (i > 0 && s_less(n, s_heap[(i - 1) / 2])) {
		s_heap[i] = s_heap[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	s_heap[i] = n;
}

static int
s_pop(void)
{
	int top = s_heap[0], last = s_heap[--s_nheap], i = 0;

	for (;;) {
		int c = 2 * i + 1;

		if (c >= s_nheap) {
			break;
		}
		if (c + 1 < s_nheap && s_less(s_heap[c + 1], s_heap[c])) {
			c++;
		}
		if (!s_less(s_heap[c], last)) {
			break;
		}
		s_heap[i] = s_heap[c];
		i = c;
	}
	if (s_nheap > 0) {
		s_heap[i] = last;
	}
	return top;
}

/* The shortest g seen for a state (slot in the table), or -1. */
static int *
s_seen(const char *s)
{
	uint32_t k = pz_key(s), i = (k * 2654435761u) & (S_TABLE - 1);

	while (s_keys[i] != 0 && s_keys[i] != k) {
		i = (i + 1) & (S_TABLE - 1);
	}
	if (s_keys[i] == 0) {
		s_keys[i] = k;
		s_best[i] = -1;
	}
	return &s_best[i];
}

static void s_ask(bm_agent_t *a, int n);

static void
s_on_score(bm_agent_t *a, int err, bm_msg_t *reply, void *arg)
{
	int n = (int)(intptr_t)arg;
	char score[16];

	if (err != 0) {
		s_retries++; /* a thinker died or was slow: ask again */
		s_outstanding--;
		s_ask(a, n);
		return;
	}
	snprintf(score, sizeof score, "%.*s", (int)bm_msg_size(reply),
	         (const char *)bm_msg_data(reply));
	s_nodes[n].h = atoi(score);
	s_push(n);
	s_outstanding--;
}

/* Broadcasts branch n and asks any thinker to score it. */
static void
s_ask(bm_agent_t *a, int n)
{
	char topic[128], body[64];

	snprintf(topic, sizeof topic, "tot/%s/d%d/n%d", s_tree, s_nodes[n].g, n);
	snprintf(body, sizeof body, "%s g=%d parent=%d", s_nodes[n].s, s_nodes[n].g,
	         s_nodes[n].parent);
	(void)bm_agent_publish(a, topic, body, strlen(body));
	if (bm_agent_request(a, "@think", "think.score", s_nodes[n].s, 9, 5000, s_on_score,
	                     (void *)(intptr_t)n) == 0) {
		s_outstanding++;
	}
}

static int
s_node(const char *s, int parent, int g, char move)
{
	if (s_nnodes == s_capnodes) {
		s_capnodes = s_capnodes ? 2 * s_capnodes : 1024;
		s_nodes = realloc(s_nodes, (size_t)s_capnodes * sizeof *s_nodes);
		s_heap = realloc(s_heap, (size_t)s_capnodes * sizeof *s_heap);
		if (s_nodes == NULL || s_heap == NULL) {
			abort(); /* an example: out of memory ends it */
		}
	}
	memcpy(s_nodes[s_nnodes].s, s, 10);
	s_nodes[s_nnodes].parent = parent;
	s_nodes[s_nnodes].g = g;
	s_nodes[s_nnodes].h = 0;
	s_nodes[s_nnodes].move = move;
	*s_seen(s) = g;
	return s_nnodes++;
}

/* One round: take the `width` best open branches and expand them. */
static void
s_round(bm_agent_t *a, int width)
{
	for (int k = 0; k < width && s_nheap > 0; k++) {
		int n = s_pop();

		if (strcmp(s_nodes[n].s, PZ_GOAL) == 0) {
			if (k == 0) {
				s_goal = n; /* the most promising branch is solved */
				return;
			}
			s_push(n); /* may not be the shortest yet: next round */
			return;
		}
		if (*s_seen(s_nodes[n].s) < s_nodes[n].g) {
			continue; /* reached by a shorter path since */
		}
		s_expanded++;
		for (const char *m = PZ_MOVES; *m; m++) {
			char c[10];

			memcpy(c, s_nodes[n].s, 10);
			if (!pz_move(c, *m)) {
				continue;
			}
			if (*s_seen(c) >= 0 && *s_seen(c) <= s_nodes[n].g + 1) {
				s_pruned++;
				continue;
			}
			s_ask(a, s_node(c, n, s_nodes[n].g + 1, *m));
		}
	}
}

static void
s_extra(bm_agent_t *a, char *buf, size_t cap)
{
	(void)a;
	snprintf(buf, cap, "expanded %lu\npruned %lu\nbranches %d\nrescored %lu\n%s", s_expanded,
	         s_pruned, s_nnodes, s_retries, s_answer);
}

int
main(int argc, char **argv)
{
	ex_opts_t o;
	bm_agent_t *a;
	const char *start;
	int width = 8, rc = 0;

	argc = ex_parse(argc, argv, &o, "planner");
	for (int i = 1; i < argc - 1; i++) {
		if (strcmp(argv[i], "--tree") == 0) {
			s_tree = argv[++i];
		} else if (strcmp(argv[i], "--width") == 0) {
			width = atoi(argv[++i]);
		}
	}
	start = argc > 1 ? argv[argc - 1] : "";
	if (!pz_valid(start) || width < 1) {
		fprintf(stderr, "usage: beast-planner [--tree ID] [--width N] START  (START: 9 "
		                "digits 0-8, 0 the blank, e.g. 123405786)\n");
		return 2;
	}
	if ((a = ex_open(&o, NULL)) == NULL) {
		return 1;
	}
	s_ask(a, s_node(start, -1, 0, 0));
	while (!bm_agent_stopped(a) && s_goal < 0) {
		if (s_outstanding == 0) {
			if (s_nheap == 0) {
				break; /* nothing left to try: unsolvable */
			}
			s_round(a, width);
			continue;
		}
		if ((rc = bm_agent_step(a, 100)) < 0 && rc != -EINTR) {
			break;
		}
		rc = 0;
		ex_tick(a, &o, s_extra);
	}
	if (s_goal >= 0) {
		char path[128];
		int len = s_nodes[s_goal].g;
		bm_agent_send_opts_t so = {.type = "tot.answer"};
		char topic[128];

		path[len] = '\0';
		for (int n = s_goal; s_nodes[n].parent >= 0; n = s_nodes[n].parent) {
			path[s_nodes[n].g - 1] = s_nodes[n].move;
		}
		snprintf(s_answer, sizeof s_answer, "tree %s\nstart %s\nmoves %d\npath %s\n", s_tree,
		         start, len, path);
		printf("%s", s_answer);
		snprintf(topic, sizeof topic, "tot/%s/answer", s_tree);
		(void)bm_agent_publish(a, topic, path, strlen(path));
		if (o.report_to != NULL) {
			(void)bm_agent_send(a, o.report_to, &so, s_answer, strlen(s_answer), NULL);
		}
	} else if (!bm_agent_stopped(a)) {
		rc = -1;
	}
	if (ex_finish(&a, &o, s_extra) < 0) {
		rc = -1;
	}
	return s_goal >= 0 && rc == 0 ? 0 : 1;
}

/*
 * puzzle.h - the problem the example swarm solves: the 8-puzzle.  A state
 * is 9 characters '0'..'8' read row by row, '0' the blank; the goal is
 * "123456780".  A move slides the blank Up, Down, Left or Right.  The
 * shortest solution of any start is known (breadth-first search over the
 * 181,440 reachable states), so the swarm's answer can be checked.
 * Header-only: the planner, the thinker and `beast demo` share it.
 */
#ifndef BM_PUZZLE_H
#define BM_PUZZLE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PZ_GOAL "123456780"
#define PZ_MOVES "UDLR"

/* Applies move m (one of "UDLR") to s in place; false when illegal. */
static inline bool
pz_move(char s[10], char m)
{
	int b = (int)(strchr(s, '0') - s), r = b / 3, c = b % 3, t;

	switch (m) {
	case 'U': t = r > 0 ? b - 3 : -1; break;
	case 'D': t = r < 2 ? b + 3 : -1; break;
	case 'L': t = c > 0 ? b - 1 : -1; break;
	case 'R': t = c < 2 ? b + 1 : -1; break;
	default: t = -1;
	}
	if (t < 0) {
		return false;
	}
	s[b] = s[t];
	s[t] = '0';
	return true;
}

/* A valid state: a permutation of '0'..'8'. */
static inline bool
pz_valid(const char *s)
{
	int seen = 0;

	if (strlen(s) != 9) {
		return false;
	}
	for (int i = 0; i < 9; i++) {
		if (s[i] < '0' || s[i] > '8' || (seen & (1 << (s[i] - '0')))) {
			return false;
		}
		seen |= 1 << (s[i] - '0');
	}
	return true;
}

/* The state as a number (its digits), a key for tables. */
static inline uint32_t
pz_key(const char *s)
{
	return (uint32_t)strtoul(s, NULL, 10);
}

/* A start state: `moves` random legal moves from the goal, never undoing
 * the one before (reproducible from seed), so it is always solvable. */
static inline void
pz_scramble(char s[10], int moves, uint32_t seed)
{
	static const char undo[] = "DURL"; /* undo[i] reverses PZ_MOVES[i] */
	char last = 0;

	strcpy(s, PZ_GOAL);
	for (int i = 0; i < moves; i++) {
		int m;

		seed = seed * 1103515245u + 12345u;
		m = (int)((seed >> 16) & 3);
		if (PZ_MOVES[m] == last || !pz_move(s, PZ_MOVES[m])) {
			i--;
			continue;
		}
		last = undo[m];
	}
}

#endif

/*
 * bb_report.h - beast-bench's output: the terminal table, results.csv,
 * results.json, the plots (gnuplot), report.md, and the targets, checked
 * by reading results.json back.
 */
#ifndef BB_REPORT_H_INCLUDED
#define BB_REPORT_H_INCLUDED

#include <stdio.h>

#include "bb.h"

typedef struct {
	int quick, rounds;
	double seconds;
	const char *baseline, *only;
} bb_run_info_t;

void bb_report_table(FILE *f, const bb_row_t *rows, int n, const char *baseline);
/* Writes everything into dir (and the JSON also to json when not NULL),
 * then checks the targets from dir/results.json and prints them: 0, or -1
 * when a file could not be written. */
int bb_report_write(const char *dir, const char *json, const bb_row_t *rows, int n, const bb_run_info_t *info);
/* Checks the targets against a results.json: 0 when none is missed. */
int bb_report_check_file(const char *path, FILE *out);

#endif

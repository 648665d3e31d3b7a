/*
 * echo - the smallest agent: answers every request with its own body.
 *
 *   beast-echo [--dir DIR] [--name NAME]     (anycast: @echo)
 */
#include "example.h"

static int
s_echo(bm_agent_t *a, bm_msg_t *req, void *arg)
{
	(void)arg;
	return bm_agent_reply(a, req, req->type, bm_msg_data(req), bm_msg_size(req));
}

int
main(int argc, char **argv)
{
	const char *caps[] = {"echo", NULL};
	ex_opts_t o;
	bm_agent_t *a;

	ex_parse(argc, argv, &o, "echo");
	if ((a = ex_open(&o, caps)) == NULL) {
		return 1;
	}
	bm_agent_on_request(a, NULL, s_echo, NULL);
	ex_run(a, &o, NULL);
	return ex_finish(&a, &o, NULL) == 0 ? 0 : 1;
}

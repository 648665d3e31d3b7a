/*
 * bb_table.c - the transports beast-bench knows, in table order.  A module
 * adds its bb_transport_t here (one line each); a peer that is not
 * installed stays listed: its rows then say "not installed".
 */
#include "bb.h"

extern const bb_transport_t bb_t_zmq_dealer_ipc, bb_t_zmq_dealer_tcp, bb_t_zmq_forwarder_ipc, bb_t_zmq_proxy;
extern const bb_transport_t bb_t_uds;

const bb_transport_t *const bb_transports[] = {
	/* raw libzmq: the baselines */
	&bb_t_zmq_dealer_ipc,
	&bb_t_zmq_dealer_tcp,
	&bb_t_zmq_forwarder_ipc,
	&bb_t_zmq_proxy,
	&bb_t_uds,
	NULL,
};

/*
 * bb_table.c - the transports beast-bench knows, in table order.  A module
 * adds its bb_transport_t here (one line each); a peer that is not
 * installed stays listed: its rows then say "not installed".
 */
#include "bb.h"

extern const bb_transport_t bb_t_zmq_dealer_ipc, bb_t_zmq_dealer_tcp, bb_t_zmq_forwarder_ipc, bb_t_zmq_proxy,
	bb_t_zmq_pair_ipc, bb_t_zmq_pair_inproc;
extern const bb_transport_t bb_t_uds;
extern const bb_transport_t bb_t_beast_mesh_ipc, bb_t_beast_direct, bb_t_beast_mesh_ipc_http, bb_t_beast_mesh_tcp, bb_t_beast_proxy,
	bb_t_beast_outbox_always, bb_t_beast_outbox_interval, bb_t_beast_outbox_never, bb_t_beast_ring,
	bb_t_beast_ring_copy, bb_t_memcpy;
extern const bb_transport_t bb_t_beast_shmlog, bb_t_beast_shmlog_untethered, bb_t_beast_proxy_shm;
extern const bb_transport_t bb_t_nats, bb_t_nats_js;
extern const bb_transport_t bb_t_redis_pubsub, bb_t_redis_stream, bb_t_redis_stream_fsync;
extern const bb_transport_t bb_t_nng_pair, bb_t_iceoryx;
extern const bb_transport_t bb_t_agent_c, bb_t_agent_py;
extern const bb_transport_t bb_t_bridge, bb_t_bridge_js;

const bb_transport_t *const bb_transports[] = {
	/* beastmesh */
	&bb_t_beast_mesh_ipc,
	&bb_t_beast_direct,
	&bb_t_beast_mesh_ipc_http,
	&bb_t_beast_mesh_tcp,
	&bb_t_beast_proxy,
	&bb_t_beast_proxy_shm,
	&bb_t_beast_shmlog,
	&bb_t_beast_shmlog_untethered,
	&bb_t_beast_outbox_always,
	&bb_t_beast_outbox_interval,
	&bb_t_beast_outbox_never,
	&bb_t_beast_ring,
	&bb_t_beast_ring_copy,
	&bb_t_agent_c,
	&bb_t_agent_py,
	/* raw libzmq: the baselines */
	&bb_t_zmq_dealer_ipc,
	&bb_t_zmq_dealer_tcp,
	&bb_t_zmq_forwarder_ipc,
	&bb_t_zmq_proxy,
	&bb_t_zmq_pair_ipc,
	&bb_t_zmq_pair_inproc,
	&bb_t_uds,
	&bb_t_memcpy,
	/* peers */
	&bb_t_nats,
	&bb_t_nats_js,
	&bb_t_redis_pubsub,
	&bb_t_redis_stream,
	&bb_t_redis_stream_fsync,
	&bb_t_nng_pair,
	&bb_t_iceoryx,
	/* across hosts (network namespaces) */
	&bb_t_bridge,
	&bb_t_bridge_js,
	NULL,
};

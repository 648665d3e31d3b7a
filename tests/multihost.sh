#!/usr/bin/env bash
# multihost.sh - the multihost suite: two hosts and a hub as network
# namespaces made here, each host with its own beastd, leaf nats-server
# (JetStream, its own domain), beast-bridge and agent; the hub runs a
# plain nats-server the leaves connect to.  docs/multihost.md.
#
#   multihost.sh BEASTD BEAST BRIDGE MH_AGENT NATS_SERVER [COUNT]
#
# Checks, with COUNT (10,000) messages A@h1 -> B@h2 and COUNT back at the
# same time, while the h1<->hub link is cut for 5 s, the hub's
# nats-server is killed -9 and restarted, and each bridge is killed -9 and
# restarted: every message handled exactly once, every outbox empty;
# requests to an agent on the other host are answered through both
# bridges; then
# messages to an agent that never comes back dead-letter at the origin
# with a reason that names the remote side.
#
# Exit 77 (skip, with the reason) only when namespaces cannot be made or a
# program is missing.  Everything made here — namespaces, veths,
# processes, files — is removed on any exit.
set -uo pipefail

BEASTD=$1 BEAST=$2 BRIDGE=$3 AGENT=$4 NATS=$5 COUNT=${6:-10000}
# Paced so the faults below land mid-stream: 10,000 at 400/s is 25 s.
RATE=${BM_MULTIHOST_RATE:-400}
TAG=bmh$$
HUB=$TAG-hub
NS1=$TAG-h1
NS2=$TAG-h2
T0=$(date +%s)
PIDS=()
WORK=

say() { printf '[multihost +%ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
skip() { echo "SKIP: $*"; exit 77; }
fail() { say "FAIL: $*"; dump; exit 1; }

cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		kill -9 "$p" 2>/dev/null
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null
	done
	for ns in "$HUB" "$NS1" "$NS2"; do
		ip netns del "$ns" 2>/dev/null
	done
	[ -n "$WORK" ] && rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

dump() {
	[ -n "$WORK" ] || return
	for f in "$WORK"/*.log; do
		[ -s "$f" ] && { echo "--- $(basename "$f") (last 15 lines)"; tail -15 "$f"; }
		grep -q "ERROR: AddressSanitizer" "$f" 2>/dev/null &&
			sed -n '/ERROR: AddressSanitizer/,+45p' "$f"
	done
}

for p in "$BEASTD" "$BEAST" "$BRIDGE" "$AGENT"; do
	[ -x "$p" ] || skip "$p is not built"
done
[ -x "$NATS" ] || command -v "$NATS" >/dev/null || skip "nats-server is not installed (Debian nats-server; BM_WITH_PEERS=1 bash .ci/bootstrap.sh)"
[ "$(id -u)" = 0 ] || skip "network namespaces need root (ip netns add)"
ip netns add "$HUB" 2>/dev/null || skip "cannot make network namespaces here (ip netns add failed)"
ip netns add "$NS1" && ip netns add "$NS2" || fail "ip netns add"

WORK=$(mktemp -d /tmp/bmh.XXXXXX)
chmod 700 "$WORK"

# ---- the network: hub 10.201.1.1 <-> h1 10.201.1.2, hub 10.201.2.1 <-> h2 10.201.2.2
net() {
	local ns=$1 n=$2
	ip link add "${TAG}a$n" type veth peer name "${TAG}b$n" || return 1
	ip link set "${TAG}a$n" netns "$HUB" && ip link set "${TAG}b$n" netns "$ns" || return 1
	ip -n "$HUB" addr add "10.201.$n.1/24" dev "${TAG}a$n" &&
		ip -n "$ns" addr add "10.201.$n.2/24" dev "${TAG}b$n" &&
		ip -n "$HUB" link set "${TAG}a$n" up && ip -n "$ns" link set "${TAG}b$n" up &&
		ip -n "$ns" link set lo up
}
ip -n "$HUB" link set lo up
net "$NS1" 1 || fail "veth for h1"
net "$NS2" 2 || fail "veth for h2"
LINK1="${TAG}b1" # h1's end of its link to the hub

# ---- configs, made by `beast-bridge init` (docs/multihost.md)
"$BRIDGE" init hub --leaf-listen 0.0.0.0:7422 --store "$WORK/jshub" >"$WORK/hub.conf" ||
	fail "beast-bridge init hub"
for h in 1 2; do
	"$BRIDGE" init leaf --host h$h --hub 10.201.$h.1:7422 --store "$WORK/js$h" \
		>"$WORK/leaf$h.conf" || fail "beast-bridge init leaf"
done

declare -A PID
start() { # start KEY NS LOG CMD...
	local key=$1 ns=$2 log=$3
	shift 3
	ip netns exec "$ns" "$@" >>"$WORK/$log.log" 2>&1 &
	PID[$key]=$!
	PIDS+=("$!")
}
wait_for() { # wait_for SECONDS WHAT CMD...
	local until=$(( $(date +%s) + $1 )) what=$2
	shift 2
	until "$@" 2>/dev/null; do
		[ "$(date +%s)" -lt "$until" ] || fail "timed out waiting for $what"
		sleep 0.1
	done
}
port_open() { ip netns exec "$1" bash -c "exec 3<>/dev/tcp/127.0.0.1/$2"; }
leaf_up() { grep -q "Leafnode connection created" "$WORK/$1.log"; }

start hub "$HUB" hub "$NATS" -c "$WORK/hub.conf"
wait_for 10 "the hub's nats-server" port_open "$HUB" 4222
for h in 1 2; do
	ns=$TAG-h$h
	mkdir -m 700 "$WORK/d$h" "$WORK/state$h"
	start leaf$h "$ns" leaf$h "$NATS" -c "$WORK/leaf$h.conf"
	start beastd$h "$ns" beastd$h "$BEASTD" --dir "$WORK/d$h"
done
for h in 1 2; do
	wait_for 10 "h$h's leaf nats-server" port_open "$TAG-h$h" 4222
	wait_for 10 "h$h's leaf to reach the hub" leaf_up leaf$h
	wait_for 10 "h$h's beastd" test -S "$WORK/d$h/mesh.sock"
done
bridge() { # bridge H: (re)start host H's bridge and wait until it is up
	local h=$1 n
	n=$(grep -c "up: mesh agent" "$WORK/bridge$h.log" 2>/dev/null)
	start bridge$h "$TAG-h$h" bridge$h "$BRIDGE" --host h$h --dir "$WORK/d$h" --topics tot/ -v
	wait_for 20 "h$h's bridge" bridge_up "$h" "${n:-0}"
}
bridge_up() { [ "$(grep -c "up: mesh agent" "$WORK/bridge$1.log")" -gt "$2" ]; }
bridge 1
bridge 2
say "topology up: hub + h1 + h2 (namespaces $TAG-*)"

agent() { # agent H NAME TO EXPECT [extra...]
	local h=$1 name=$2 to=$3 expect=$4
	shift 4
	BEAST_STATE="$WORK/state$h" start agent-$name "$TAG-h$h" agent-$name env \
		BEAST_STATE="$WORK/state$h" "$AGENT" --dir "$WORK/d$h" --name "$name" \
		--to "$to" --count "$COUNT" --expect "$expect" --attempts 100000 \
		--out "$WORK/$name.in" --done "$WORK/$name.done" --rate "$RATE" "$@"
}
agent 1 A B@h2 "$COUNT"
agent 2 B A@h1 "$COUNT"
lines() { cat "$WORK"/"$1".in 2>/dev/null | wc -l; }
progress() { say "$1: A handled $(lines A), B handled $(lines B)"; }

# ---- chaos while it streams
some_across() { [ "$(lines B)" -gt 0 ]; }
wait_for 60 "the first messages across" some_across
progress "streaming"
ip -n "$NS1" link set "$LINK1" down
say "link h1<->hub cut"
sleep 5
progress "after 5 s cut"
ip -n "$NS1" link set "$LINK1" up
say "link h1<->hub back"
sleep 2
kill -9 "${PID[hub]}"
say "hub nats-server killed -9"
sleep 2
start hub "$HUB" hub "$NATS" -c "$WORK/hub.conf"
wait_for 10 "the hub's nats-server again" port_open "$HUB" 4222
say "hub restarted"
progress "after hub restart"
for h in 1 2; do
	kill -9 "${PID[bridge$h]}"
	say "bridge h$h killed -9"
	sleep 1
	bridge "$h"
	say "bridge h$h restarted"
done

# ---- every message handled exactly once, every outbox empty
wait_for 300 "both agents to finish" \
	test -e "$WORK/A.done" -a -e "$WORK/B.done"
progress "done"
for name in A B; do
	kill -TERM "${PID[agent-$name]}"
	wait "${PID[agent-$name]}"
	grep "^sent" "$WORK/agent-$name.log" | tail -1 | sed "s/^/[multihost] $name: /"
done
check_once() { # check_once FILE FROM PREFIX
	local f=$WORK/$1.in total uniq good
	total=$(wc -l <"$f")
	uniq=$(sort -u "$f" | wc -l)
	good=$(grep -cE "^$2 $3:[0-9]+$" "$f")
	[ "$total" = "$COUNT" ] && [ "$uniq" = "$COUNT" ] && [ "$good" = "$COUNT" ] &&
		[ "$(sed 's/.*://' "$f" | sort -n | uniq | awk 'NR==1{a=$1} END{print a, $1, NR}')" = "0 $(( COUNT - 1 )) $COUNT" ] ||
		fail "$1 handled $total lines ($uniq distinct, $good well-formed), want exactly $COUNT"
	say "$1 handled each of the $COUNT messages from $2 exactly once"
}
check_once A "B@h2" B
check_once B "A@h1" A
for h in 1 2; do
	name=$([ $h = 1 ] && echo A || echo B)
	st=$(BEAST_STATE="$WORK/state$h" "$BEAST" --dir "$WORK/d$h" outbox --as $name stats --json)
	echo "$st" | grep -q '"pending": *0[,}]' && echo "$st" | grep -q '"dead": *0[,}]' ||
		fail "$name's outbox is not empty: $st"
done
say "both outboxes empty"

# ---- the shared directory and anycast to any host
beast() { # beast H ARGS...: the CLI on host H
	local h=$1
	shift
	ip netns exec "$TAG-h$h" env BEAST_STATE="$WORK/state$h" "$BEAST" --dir "$WORK/d$h" "$@"
}
listen() { # listen H NAME COUNT: beast listen --caps map on host H
	start listen-$2 "$TAG-h$1" listen-$2 env BEAST_STATE="$WORK/state$1" \
		"$BEAST" --dir "$WORK/d$1" listen --caps map --count "$3" "$2"
}
listed() { beast "$1" ls --all 2>/dev/null | grep -qE "^$2 +$3 +map"; }
got() { grep -q "$2" "$WORK/listen-$1.log"; }
listen 2 M 2
wait_for 15 "M@h2 in h1's view of the shared directory" listed 1 h2 M
beast 1 ls --all | sed 's/^/[multihost] ls --all on h1: /'
beast 1 send --as S --timeout 20000 '@map@*' "anycast to any host" >/dev/null ||
	fail "send to @map@* with the only map agent on h2"
wait_for 10 "M to print it" got M "S@h1 msg anycast to any host"
beast 1 send --as S --timeout 20000 '@map@h2' "anycast on h2" >/dev/null ||
	fail "send to @map@h2"
wait_for 10 "M to print it" got M "S@h1 msg anycast on h2"
say "@map@* and @map@h2 from h1 reached M on h2"
listen 1 L 1
wait_for 15 "L@h1 in the directory" listed 1 h1 L
beast 1 send --as S --timeout 20000 '@map@*' "local first" >/dev/null ||
	fail "send to @map@* with a map agent on h1 too"
wait_for 10 "L to print it" got L "S@h1 msg local first"
say "@map@* from h1 went to L on h1 while M on h2 also has 'map' (local first)"
out=$(beast 1 send --as S --timeout 3000 --ttl 2000 '@nosuchcap@*' "x" 2>&1)
echo "$out" | grep -q "no host has an agent with capability 'nosuchcap'" ||
	fail "@nosuchcap@* was not refused by name: $out"
say "@nosuchcap@* refused: $out"

# ---- request/reply across hosts: the reply comes back through both bridges
start echo-E "$TAG-h2" echo-E env BEAST_STATE="$WORK/state2" "$BEAST" --dir "$WORK/d2" echo E
echo_listed() { beast 1 ls --all 2>/dev/null | grep -qE "^h2 +E "; }
wait_for 15 "E@h2 in h1's view of the shared directory" echo_listed
for i in 1 2 3; do
	rep=$(beast 1 request --as R --timeout 20000 E@h2 ping "round trip $i") ||
		fail "request $i to E@h2 got no reply: $rep"
	[ "$rep" = "round trip $i" ] || fail "request $i to E@h2: reply '$rep', want 'round trip $i'"
done
say "3 requests h1 -> E@h2 answered with their own bodies through both bridges"

# ---- the W3C trace context crosses hosts untouched
TP=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
start listen-T "$TAG-h2" listen-T env BEAST_STATE="$WORK/state2" "$BEAST" --dir "$WORK/d2" \
	listen --json --count 1 T
t_listed() { beast 1 ls --all 2>/dev/null | grep -qE "^h2 +T "; }
wait_for 15 "T@h2 in h1's view of the shared directory" t_listed
beast 1 send --as S --timeout 20000 --traceparent "$TP" --tracestate "bm=1" T@h2 traced >/dev/null ||
	fail "send with a trace context to T@h2"
t_got() { grep -q "\"traceparent\":\"$TP\"" "$WORK/listen-T.log"; }
wait_for 10 "T@h2 to print the message with its traceparent" t_got
say "a traceparent sent on h1 reached T@h2 unchanged"

# ---- too large for NATS: refused for good at the origin, not retried
out=$(head -c 1200000 /dev/zero | tr '\0' x |
	beast 1 send --as BIG --timeout 10000 T@h2 - 2>&1)
echo "$out" | grep -q "is dead: too large.*last refusal: .*max_payload" ||
	fail "a 1.2 MB message to T@h2 was not refused as too large for NATS: $out"
say "a 1.2 MB message to T@h2 dead at once: ${out:0:160}"

# ---- topics: a publisher on h1, a subscriber on each host, zero gaps
TN=${BM_MULTIHOST_TOPIC_COUNT:-2000}
mh() { # mh H NAME ARGS...: mh-agent on host H
	local h=$1 name=$2
	shift 2
	start mh-$name "$TAG-h$h" mh-$name env BEAST_STATE="$WORK/state$h" "$AGENT" \
		--dir "$WORK/d$h" --name "$name" --out "$WORK/$name.in" --done "$WORK/$name.done" "$@"
}
mh 1 S1 --subscribe tot/ --expect "$TN" --ready "$WORK/S1.ready"
mh 2 S2 --subscribe tot/ --expect "$TN" --ready "$WORK/S2.ready"
wait_for 15 "the subscribers" test -e "$WORK/S1.ready" -a -e "$WORK/S2.ready"
warm() { grep -q "^tot/warm/ " "$WORK/S2.in"; }
for i in $(seq 50); do # until a broadcast from h1 has crossed (bounded)
	beast 1 pub --as W tot/warm "$i" >/dev/null 2>&1
	warm && break
	sleep 0.2
done
warm || fail "no broadcast from h1 reached h2's subscriber"
mh 1 P --publish tot/7 --count "$TN" --rate 200
wait_for 60 "both subscribers to get $TN broadcasts" test -e "$WORK/S1.done" -a -e "$WORK/S2.done"
for s in S1 S2; do
	f=$WORK/$s.in
	n=$(grep -c "^tot/7/ P " "$f")
	u=$(grep "^tot/7/ P " "$f" | awk '{print $3}' | sort -un | awk 'NR==1{a=$1} END{print a, $1, NR}')
	g=$(grep "^tot/7/ P " "$f" | awk '{s+=$4} END{print s+0}')
	[ "$n" = "$TN" ] && [ "$u" = "1 $TN $TN" ] && [ "$g" = 0 ] ||
		fail "$s got $n broadcasts (tseq first/last/distinct: $u), gaps $g; want $TN, 1 $TN $TN, 0"
done
say "a publisher on h1: $TN broadcasts at 200/s on tot/7/, each subscriber (h1 and h2) got all, 0 gaps"

# ---- a remote agent that never comes back: dead letters at the origin
COUNT=5 RATE=0
agent 1 C ghost@h2 0 --ttl 4000
wait_for 60 "C's messages to settle" test -e "$WORK/C.done"
kill -TERM "${PID[agent-C]}"
wait "${PID[agent-C]}"
dead=$(BEAST_STATE="$WORK/state1" "$BEAST" --dir "$WORK/d1" outbox --as C dead)
echo "$dead"
[ "$(echo "$dead" | grep -c "ghost@h2")" = 5 ] || fail "want 5 dead letters to ghost@h2"
# The reason names the remote side: h2's bridge relays its beastd's words.
[ "$(echo "$dead" | grep -c "last refusal: on host h2: no agent named 'ghost' is online")" = 5 ] ||
	fail "want each dead letter's reason to name host h2 and its refusal"
say "5 messages to ghost@h2 dead-lettered at the origin, each naming h2's refusal"
say "PASS"
exit 0

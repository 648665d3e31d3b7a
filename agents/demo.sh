#!/usr/bin/env bash
# The main job, for now: set up, start beastd on a private scratch
# directory, and run a short scripted exchange between agents that shows the
# mesh working — registration, directed sends with ACKs, anycast requests,
# refusals with reasons, the directory and the broker's counters.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/bootstrap.sh

BIN=build/agents
export BEAST_DIR
BEAST_DIR=$(mktemp -d /tmp/beast-demo.XXXXXX)
chmod 700 "$BEAST_DIR"
# Outbox and de-dup journals of the demo's agents: gone with the demo.
export BEAST_STATE="$BEAST_DIR/state"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$BEAST_DIR"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

wait_for() { # wait_for NAME: until beast ls lists NAME (bounded)
	for _ in $(seq 1 100); do
		"$BIN/beast" ls --json 2>/dev/null | grep -q "\"name\":\"$1\"" && return 0
		sleep 0.05
	done
	echo "demo: agent $1 did not come up" >&2
	return 1
}

step "start beastd in $BEAST_DIR"
"$BIN/beastd" &
pids+=($!)
for _ in $(seq 1 100); do "$BIN/beast" ping >/dev/null 2>&1 && break; sleep 0.05; done
"$BIN/beast" ping

step "agents join: a mapper that prints what it gets, two planners that answer @plan"
"$BIN/beast" listen --caps map --count 3 mapper &
pids+=($!)
"$BIN/beast" echo --caps plan planner-a &
pids+=($!)
"$BIN/beast" echo --caps plan planner-b &
pids+=($!)
wait_for mapper; wait_for planner-a; wait_for planner-b
"$BIN/beast" ls

step "directed messages to mapper, each acknowledged by the receiver"
"$BIN/beast" send --as scout --type scan.ready mapper "tile 7 scanned: 1.2M points"
echo "thought: explore the east corridor first" | "$BIN/beast" send --as scout --type tot.note mapper
"$BIN/beast" send --as scout --type scan.ready mapper "tile 8 scanned: 0.9M points"

step "anycast requests to any agent that can plan (least loaded answers)"
for i in 1 2 3 4; do
	printf 'request %d -> ' "$i"
	"$BIN/beast" request --as boss @plan plan.request "route to waypoint $i"
done

step "refusals come back with a reason, never silently"
# Stored first, then refused by the broker: with one attempt allowed it is
# dead-lettered at once, with the reason (beast outbox --as scout dead).
"$BIN/beast" send --as scout --attempts 1 ghost "anyone there?" || echo "(exit $? as documented)"
"$BIN/beast" listen planner-a || echo "(exit $? as documented)"

step "broker counters"
"$BIN/beast" stats
echo
echo "demo: done — beastd and the agents are stopped and $BEAST_DIR removed on exit"

#!/usr/bin/env bash
# The dashboard in a real browser: beastd --http with a small swarm (an echo
# agent answering a bounded loop of requests, and a listener fed by sends),
# headless Chromium loads the page, runs its polls (virtual time), and the
# rendered DOM must hold the agents, non-zero rates and the flow graph's
# edges.  A screenshot is kept for CI: $BM_SHOT (default ./dashboard.png).
#
# usage: dashboard_test.sh BEASTD BEAST
# Exit 0 pass, 1 fail, 77 skip (Chromium not installed).
set -euo pipefail
beastd=$1 beast=$2
shot=${BM_SHOT:-$PWD/dashboard.png}
chromium=${BM_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
	echo "SKIP: $chromium is not installed (Debian package chromium; .ci/bootstrap.sh installs it)"
	exit 77
fi

dir=$(mktemp -d /tmp/bmdash.XXXXXX)
chmod 700 "$dir"
pids=()
cleanup() {
	for p in "${pids[@]}"; do pkill -9 -P "$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT

"$beastd" --dir "$dir" --http 127.0.0.1:0 2>"$dir/beastd.log" &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$dir/http.addr" ] && break; sleep 0.05; done
addr=$(cat "$dir/http.addr")
export BEAST_STATE="$dir/state"

"$beast" --dir "$dir" echo --caps plan planner >/dev/null 2>&1 &
pids+=($!)
"$beast" --dir "$dir" listen --caps map mapper >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
	"$beast" --dir "$dir" ls 2>/dev/null | grep -q '^mapper ' &&
		"$beast" --dir "$dir" ls 2>/dev/null | grep -q '^planner ' && break
	sleep 0.05
done
# Traffic for the whole browser run: bounded in count (and by the EXIT trap).
( for i in $(seq 1 400); do
	"$beast" --dir "$dir" request --as scout --timeout 2000 @plan plan.request "route $i" >/dev/null 2>&1 || true
	"$beast" --dir "$dir" send --as scout --timeout 2000 mapper "tile $i" >/dev/null 2>&1 || true
	"$beast" --dir "$dir" pub --as explorer tot/7/2 "branch $i" >/dev/null 2>&1 || true
  done ) &
pids+=($!)
sleep 1

flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
       --disable-background-networking --disable-component-update --disable-sync
       --virtual-time-budget=8000 --window-size=1280,900)
url="http://$addr/?poll=400"
timeout 90 "$chromium" "${flags[@]}" --user-data-dir="$dir/chrome-dom" --dump-dom "$url" \
	>"$dir/dom.html" 2>"$dir/chrome.log"
timeout 90 "$chromium" "${flags[@]}" --user-data-dir="$dir/chrome-shot" --screenshot="$shot" "$url" \
	>/dev/null 2>>"$dir/chrome.log"

fail=0
check() { # description, extended regex over the DOM
	if grep -Eq "$2" "$dir/dom.html"; then
		echo "ok: $1"
	else
		echo "FAIL: $1 (no match for: $2)"
		fail=1
	fi
}
check "health badge says ok" 'id="health" data-status="ok"'
check "agent planner in the table" '<tr data-agent="planner"'
check "agent mapper in the table" '<tr data-agent="mapper"'
check "routed rate non-zero" 'data-rate="routed" data-value="([1-9][0-9]*\.[0-9]+|0\.[0-9]*[1-9][0-9]*)"'
check "ACK rate non-zero" 'data-rate="acked" data-value="([1-9][0-9]*\.[0-9]+|0\.[0-9]*[1-9][0-9]*)"'
check "flow edge scout -> planner" 'class="edge"[^>]*data-from="scout" data-to="planner"'
check "flow edge planner -> scout" 'class="edge"[^>]*data-from="planner" data-to="scout"'
check "flow edge scout -> mapper" 'class="edge"[^>]*data-from="scout" data-to="mapper" data-rate="[0-9.]+" data-msgs="[1-9]'
check "a flow edge with a non-zero rate" 'class="edge"[^>]*data-rate="([1-9][0-9]*\.[0-9]+|0\.[0-9]*[1-9][0-9]*)"'
check "graph node for mapper" 'class="node" data-agent="mapper"'
check "broadcast topic tot/7/2 listed" '<tr data-topic="tot/7/2/?"'
if [ -s "$shot" ] && [ "$(head -c 8 "$shot" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then
	echo "ok: screenshot $shot ($(stat -c %s "$shot") bytes)"
else
	echo "FAIL: no PNG screenshot at $shot"
	fail=1
fi
if [ "$fail" != 0 ]; then
	echo "--- rendered DOM ---"; cat "$dir/dom.html"
	echo "--- beastd log ---"; cat "$dir/beastd.log"
fi
exit $fail

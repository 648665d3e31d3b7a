#!/usr/bin/env bash
# Installs what beastmesh needs on Debian/Ubuntu (apt-get, via sudo when not
# root) and builds it into ./build.  Sourced-free: run it, it is idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(gcc libc6-dev pkg-config meson ninja-build libzmq3-dev libczmq-dev libsodium-dev
      libmsgpack-dev libmicrohttpd-dev check python3-zmq python3-msgpack
      python3-cffi python3-numpy python3-pytest python3-venv python3-pip python3-setuptools
      man-db groff-base # the install test renders the manual pages
      curl prometheus chromium)
# curl, prometheus (promtool) and chromium: the observability suite fetches
# beastd's endpoints, checks /metrics and renders the dashboard headless.
[ "${BM_WITH_CLANG:-0}" = 1 ] && PKGS+=(clang libclang-rt-dev)
# Benchmark peers (optional; each bench says when one is missing), and
# gnuplot for beast-bench's plots (latency-cdf.svg, throughput.svg).
[ "${BM_WITH_PEERS:-0}" = 1 ] && PKGS+=(nats-server libnats-dev redis-server libhiredis-dev
	iceoryx libiceoryx-binding-c-dev libnng-dev gnuplot-nox)

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
	for p in "${PKGS[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing+=("$p")
	done
else
	echo "beastmesh: this setup script knows Debian and Ubuntu (apt-get)." >&2
	echo "On other systems install: meson, ninja, pkg-config, libzmq, czmq, libsodium," >&2
	echo "msgpack-c, check (and python3 zmq + msgpack), then run: meson setup build && ninja -C build" >&2
	exit 1
fi

if [ ${#missing[@]} -gt 0 ]; then
	echo "==> installing: ${missing[*]}"
	SUDO=
	if [ "$(id -u)" != 0 ]; then
		command -v sudo >/dev/null 2>&1 || {
			echo "beastmesh: need root or sudo to install: ${missing[*]}" >&2
			exit 1
		}
		SUDO=sudo
	fi
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq
	$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f build/build.ninja ]; then
	echo "==> configuring build/"
	meson setup build >/dev/null
elif [ ${#missing[@]} -gt 0 ]; then
	meson setup --reconfigure build >/dev/null # optional peers appear
fi
echo "==> building"
ninja -C build >/dev/null

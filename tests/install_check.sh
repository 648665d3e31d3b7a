#!/usr/bin/env bash
# The installed tree: `meson install --destdir` of a build, then what a user
# gets is checked where it landed — every program answers --version, both
# manual pages render (and `man` finds them), bash completes `beast s` to
# the subcommands starting with s, and the systemd user unit verifies.
# Usage: install_check.sh BUILDDIR VERSION
set -euo pipefail
build=$1
version=$2
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
fail() { echo "install: $*" >&2; exit 1; }

meson install -C "$build" --destdir "$stage" --no-rebuild >"$stage.log" 2>&1 ||
	{ cat "$stage.log"; rm -f "$stage.log"; fail "meson install failed"; }
rm -f "$stage.log"

bin=$(dirname "$(find "$stage" -path '*/bin/beastd' -type f | head -1)")
[ -x "$bin/beastd" ] || fail "no bin/beastd in the installed tree"
prefix=$(dirname "$bin")
lib=$(dirname "$(find "$stage" -name 'libbeastmesh.so*' | head -1)")
export LD_LIBRARY_PATH=$lib

# --version: the programs, and a subcommand's help path.
for p in beastd beast beast-bench beast-echo beast-planner beast-thinker beast-scanner beast-mapper; do
	[ -x "$bin/$p" ] || fail "$p is not installed"
	got=$("$bin/$p" --version) || fail "$p --version exited $?"
	[ "$got" = "$p beastmesh $version" ] || fail "$p --version said '$got'"
done
got=$("$bin/beast" send --version)
[ "$got" = "beast beastmesh $version" ] || fail "beast send --version said '$got'"
echo "ok: 8 programs print NAME beastmesh $version"
pages="man1/beast.1 man8/beastd.8"
if [ -x "$bin/beast-bridge" ]; then # built where libnats is
	got=$("$bin/beast-bridge" --version) || fail "beast-bridge --version exited $?"
	[ "$got" = "beast-bridge beastmesh $version" ] || fail "beast-bridge --version said '$got'"
	pages="$pages man8/beast-bridge.8"
	echo "ok: beast-bridge prints NAME beastmesh $version"
fi

# Manual pages: render without a warning, and man finds them by name.
man_dir=$prefix/share/man
for page in $pages; do
	[ -s "$man_dir/$page" ] || fail "$page is not installed"
	warn=$(groff -man -Tutf8 -ww -z "$man_dir/$page" 2>&1) || fail "groff failed on $page: $warn"
	[ -z "$warn" ] || fail "groff warns on $page: $warn"
	out=$(MANWIDTH=80 man -l "$man_dir/$page" 2>&1 >/dev/null) || fail "man -l $page failed: $out"
	[ -z "$out" ] || fail "man -l $page: $out"
done
MANPATH=$man_dir man -w beast >/dev/null || fail "man does not find beast(1) under $man_dir"
MANPATH=$man_dir man -w 8 beastd >/dev/null || fail "man does not find beastd(8) under $man_dir"
MANPATH=$man_dir MANWIDTH=80 man beast 2>/dev/null | grep -q "beast beastmesh VERSION" ||
	fail "man beast does not show the page"
echo "ok: $pages render; man finds beast(1) and beastd(8)"

# Bash completion: `beast s<TAB>` gives exactly the subcommands beast lists
# that start with s.
comp=$prefix/share/bash-completion/completions/beast
[ -s "$comp" ] || fail "no completion file at share/bash-completion/completions/beast"
want=$("$bin/beast" --help | awk '/^  [a-z]+ / { print $1 }' | grep '^s' | sort | tr '\n' ' ')
got=$(bash --norc --noprofile -c '
	source "$1" || exit 1
	COMP_WORDS=(beast s); COMP_CWORD=1; COMP_LINE="beast s"; COMP_POINT=7
	_beast
	printf "%s\n" "${COMPREPLY[@]}" | sort | tr "\n" " "' _ "$comp") ||
	fail "the completion file does not source in bash"
[ -n "$want" ] && [ "$got" = "$want" ] || fail "beast s<TAB> completed to '$got', want '$want'"
echo "ok: beast s<TAB> -> $got"

# The systemd user unit.
unit=$prefix/lib/systemd/user/beastd.service
[ -s "$unit" ] || fail "no lib/systemd/user/beastd.service"
grep -q '^ExecStart=.*/beastd --dir %t/beast$' "$unit" || fail "ExecStart does not run beastd on %t/beast"
grep -q '^WantedBy=default.target$' "$unit" || fail "no WantedBy=default.target"
exe=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
[ "$stage$exe" -ef "$bin/beastd" ] || fail "ExecStart names $exe, not the installed beastd"
if command -v systemd-analyze >/dev/null 2>&1; then
	# Verified with ExecStart pointing into the staged tree (the real
	# path exists only once installed) and man finding the staged pages.
	mkdir -p "$stage/verify"
	sed "s|^ExecStart=$exe|ExecStart=$bin/beastd|" "$unit" >"$stage/verify/beastd.service"
	# A warning (an unknown key, a missing man page) fails the check too.
	if out=$(MANPATH=$man_dir systemd-analyze verify "$stage/verify/beastd.service" 2>&1) &&
		[ -z "$out" ]; then
		echo "ok: beastd.service passes systemd-analyze verify"
	elif grep -q '^Failed to initialize manager\|^Failed to connect to bus' <<<"$out"; then
		# a container without a systemd to ask: the keys above stand
		echo "ok: beastd.service has its keys (systemd-analyze cannot run here: $out)"
	else
		fail "systemd-analyze verify: $out"
	fi
else
	echo "ok: beastd.service has its keys (systemd-analyze not installed)"
fi

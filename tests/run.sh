#!/usr/bin/env bash
# The test command: set up (install + build), then run every suite.
# Prints a closing line "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/bootstrap.sh

builddir=${BM_BUILDDIR:-build}
status=0
meson test -C "$builddir" --print-errorlogs "$@" || status=$?
/usr/bin/python3 - "$builddir/meson-logs/testlog.json" <<'PY'
import json, sys
ok = bad = skip = 0
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"): ok += 1
    elif r == "SKIP": skip += 1
    else: bad += 1
print("tests: %d passed, %d failed%s" % (ok, bad, ", %d skipped" % skip if skip else ""))
PY
exit $status

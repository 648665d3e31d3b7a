#!/usr/bin/env bash
# The test command: set up (install + build), then run every suite.
# Prints a closing line "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/bootstrap.sh

builddir=${BM_BUILDDIR:-build}
status=0
rm -rf "$builddir/pytest" # this run's pytest reports only
meson test -C "$builddir" --print-errorlogs "$@" || status=$?
/usr/bin/python3 - "$builddir/meson-logs/testlog.json" "$builddir/pytest" <<'PY'
# Each meson test counts once, except the pytest files: their cases count
# one by one (from the JUnit reports they wrote this run).
import glob, json, os, sys
import xml.etree.ElementTree as ET
ok = bad = skip = 0
for line in open(sys.argv[1]):
    t = json.loads(line)
    r = t["result"]
    name = t["name"].split(" / ")[-1]  # "project:suites / name"
    junit = os.path.join(sys.argv[2], name[len("python-"):] + ".xml")
    if name.startswith("python-") and os.path.exists(junit):
        s = ET.parse(junit).getroot()
        s = s if s.tag == "testsuite" else s.find("testsuite")
        n, f, e, k = (int(s.get(a, 0)) for a in ("tests", "failures", "errors", "skipped"))
        ok += n - f - e - k; bad += f + e; skip += k
        if r not in ("OK", "EXPECTEDFAIL") and f + e == 0: bad += 1
        continue
    if r in ("OK", "EXPECTEDFAIL"): ok += 1
    elif r == "SKIP": skip += 1
    else: bad += 1
print("tests: %d passed, %d failed%s" % (ok, bad, ", %d skipped" % skip if skip else ""))
PY
exit $status

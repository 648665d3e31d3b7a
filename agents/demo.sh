#!/usr/bin/env bash
# The main job: set up (install + build), then `beast demo` — beastd and a
# swarm of the example agents on a private scratch directory, live
# progress, and a summary it checks (exit 0 only when nothing was lost and
# the answer is right).  Arguments go to `beast demo` (try --chaos, --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/bootstrap.sh
exec build/agents/beast demo "$@"

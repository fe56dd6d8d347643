#!/usr/bin/env bash
# Set everything up, then run the main job: every registered Max-of-K proof strategy on the shipped
# Max-of-4 model (seed 123), printed as a table.  Extra arguments go to `gbmi prove`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${VENV:-.venv}/bin/gbmi" prove max-of-k --seed 123 --strategy all "$@"

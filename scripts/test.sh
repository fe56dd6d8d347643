#!/usr/bin/env bash
# Set everything up with the test tools, then run the whole test suite (slow soundness sweeps included).
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
VENV=${VENV:-.venv}
echo "==> $("$VENV/bin/python" -c 'import importlib.metadata as m; print("transformer-lens", m.version("transformer-lens"))')"
exec "$VENV/bin/python" -m pytest -n 2 "$@"

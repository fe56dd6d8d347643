#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv:
# the CPU build of torch pinned by constraints.txt, then gbmi-core and every plugin in plugins/, editable.
#   scripts/setup.sh          what the demo needs
#   scripts/setup.sh --test   plus the test tools
# TransformerLens: the newest release gbmi supports (4.x), or the one named by TRANSFORMER_LENS, e.g.
#   TRANSFORMER_LENS=3.9.0 VENV=.venv-tl3 scripts/setup.sh --test
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --quiet)
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

echo "==> installing torch (CPU build, pinned) and build tools"
"${PIP[@]}" install -c constraints.txt torch setuptools wheel
if [ -n "${TRANSFORMER_LENS:-}" ]; then
    echo "==> installing transformer-lens==${TRANSFORMER_LENS}"
    "${PIP[@]}" install -c constraints.txt "transformer-lens==${TRANSFORMER_LENS}"
fi
echo "==> installing gbmi-core${extras}, the plugins in plugins/ and the independent checker gbmi-check (editable)"
plugins=()
for dir in plugins/*/; do
    [ -f "$dir/pyproject.toml" ] && plugins+=(-e "$dir")
done
"${PIP[@]}" install -c constraints.txt --no-build-isolation -e ".${extras}" "${plugins[@]}" -e gbmi-check
echo "==> ready: $VENV/bin/gbmi"

#!/usr/bin/env bash
# Check that the version floors in pyproject.toml are versions the code runs on: build a venv with
# every `>=` floor of [project] dependencies and of the models and dev extras installed exactly (a
# constraints file generated from pyproject.toml), then run the tests that need no `convert` extra.
# Usage: scripts/check_floors.sh [pytest args]
# The venv is rebuilt on each run outside the tree, in $FLOORS_VENV (default /tmp/edge-ai-floors);
# PYTHON=python3.10 builds it with another interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

install_system_packages python3-venv python3-dev build-essential cmake tmux
llama_cpp_build_flags  # from scripts/lib.sh: llama.cpp without the AMX kernels that crash here, with RPC
venv="${FLOORS_VENV:-/tmp/edge-ai-floors}"
rm -rf "$venv"
"${PYTHON:-python3}" -m venv "$venv"

# Every requirement, its `>=` floor turned into `==` (read with python3, which needs tomllib: 3.11+).
python3 - >"$venv/floors.txt" <<'PY'
import re
import tomllib

with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
extras = project["optional-dependencies"]
for requirement in project["dependencies"] + extras["models"] + extras["dev"]:
    print(re.sub(r">=\s*([^,;\s]+)(,[^;]*)?", r"==\1", requirement))
PY
echo "floors:" >&2
sed 's/^/  /' "$venv/floors.txt" >&2

"$venv/bin/python" -m pip install -q --disable-pip-version-check -c "$venv/floors.txt" -e '.[models,dev]'
exec "$venv/bin/python" -m pytest tests --ignore=tests/convert "$@"

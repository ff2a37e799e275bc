#!/usr/bin/env bash
# Set up the test dependencies (system packages, .venv, dev extra, default model) and run the whole
# test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

install_system_packages python3-venv python3-dev build-essential cmake tmux
make_venv
install_project models,dev,convert
exec .venv/bin/python -m pytest "$@"

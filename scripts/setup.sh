#!/usr/bin/env bash
# Set up edge-ai on a fresh Debian-like machine and start the assistant.
#   system packages (when root or with sudo), a virtualenv in .venv, the Python dependencies and the
#   default offline model; then `edge-ai` starts. Extra arguments are passed to `edge-ai`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

install_system_packages python3-venv python3-dev build-essential cmake espeak-ng libportaudio2 libsndfile1
make_venv
install_project models,voice,screen
install_voice_models
[ -n "${EDGE_AI_SETUP_ONLY:-}" ] && exit 0
exec .venv/bin/edge-ai "$@"

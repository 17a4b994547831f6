#!/usr/bin/env bash
# Install (idempotent), then start fleetlet: `bash scripts/run.sh [fleetlet up options]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/fleetlet up "$@"

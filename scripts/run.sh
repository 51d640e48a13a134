#!/usr/bin/env bash
# Install everything and run the main job. Today: the rating-engine demo
# (the API server with demo data arrives with issue "2 of 6").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/evbilling demo rating "$@"

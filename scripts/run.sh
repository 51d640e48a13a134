#!/usr/bin/env bash
# Install everything and run the main job: the API server on SQLite with the demo operator,
# reachable at http://127.0.0.1:8000/docs (override with --host/--port; see `evbilling serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/evbilling serve --demo "$@"

#!/usr/bin/env bash
# Install everything and run the whole test suite: lint, types, layer contracts, tests,
# and a smoke run of the rating benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PYTHONHASHSEED=0
echo "== ruff";          .venv/bin/ruff check src tests bench
echo "== mypy";          .venv/bin/mypy
echo "== import-linter"; .venv/bin/lint-imports
echo "== pytest";        .venv/bin/pytest -n 2 -q "$@"
echo "== bench smoke";   .venv/bin/python bench/rating.py --quick > /dev/null

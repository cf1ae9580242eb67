#!/usr/bin/env bash
# Sets up the environment and runs the whole test suite (about 15 minutes on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# one intra-op thread per test worker (and per subprocess a test starts): see tests/conftest.py
export OMP_NUM_THREADS=1
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"

#!/usr/bin/env bash
# The GPU check in one command (see benchmarks/gpu_check.py): ~8 minutes on one H100/H200, one JSON.
#   bash benchmarks/gpu_check.sh            # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run  # CPU, toy sizes (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu_check.py "$@"

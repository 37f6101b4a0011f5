#!/usr/bin/env bash
# GPU benchmark: the `seqlevel bench speed` cases, then bf16 steps of a ~110M Llama (built from a config, no
# download) for MLE vs MixCE vs SequenceMatch (full logits and chunked), reporting tokens/s and MFU.
#
#   benchmarks/gpu.sh [--json] [--peak-flops 989e12] [other `seqlevel bench gpu` options]
#   benchmarks/gpu.sh --dry-run        # tiny config on CPU: checks the script without a GPU
#
# MFU uses --peak-flops (default 989e12 = H100 SXM dense bf16); pass your GPU's figure.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3

dry=0
for a in "$@"; do [ "$a" = "--dry-run" ] && dry=1; done

if [ "$dry" = 0 ]; then
  if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "benchmarks/gpu.sh: no CUDA device is available (torch.cuda.is_available() is False)." >&2
    echo "Run it on a machine with an NVIDIA GPU, or pass --dry-run to check the script on CPU." >&2
    exit 2
  fi
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >&2 || true
fi

export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PY" -m seqlevel bench gpu "$@"

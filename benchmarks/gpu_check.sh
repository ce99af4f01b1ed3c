#!/usr/bin/env bash
# Everything that needs a GPU, in one command (~8 minutes on an H200):
#   (a) the kernel tests compiled, on CUDA tensors (tests/test_kernels.py with TRITON_INTERPRET=0: its "cuda"
#       variants and opcheck on CUDA);
#   (b) Triton vs eager vs torch.compile(eager) for the AHRU and the generators, forward and forward+backward,
#       meta-batch 1 and 16, ConvNet-3 / ResNet-18 / ResNet-34 sizes (pudnet.bench_kernels);
#   (c) a meta-training step and a prediction on the GPU, Triton hot path vs eager hot path;
#   (d) every figure into benchmarks/results/summary.json (pudnet.report; SUMMARY=path to write elsewhere).
# Without a CUDA device it says so and exits 0. Interpreter: $PY, else the shared venv's, else `python`.
# Needs no network.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PY:-}" ]; then
  PY="$HOME/.cache/pudnet/venv/bin/python"
  [ -x "$PY" ] || PY=python
fi

cuda=$("$PY" -c 'import torch; print(torch.cuda.is_available())')
if [ "$cuda" != "True" ]; then
  echo "gpu_check: no CUDA device visible (torch.cuda.is_available() is False) — nothing to check"
  exit 0
fi
"$PY" -c 'import torch; print("gpu_check:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'

export TRITON_INTERPRET=0  # compiled kernels (tests/conftest.py would otherwise turn the interpreter on)
started=$SECONDS

echo "gpu_check (a): kernel tests on CUDA tensors"
"$PY" -m pytest -q -p no:cacheprovider -rs tests/test_kernels.py

echo "gpu_check (b, c, d): timings"
"$PY" benchmarks/gpu_timings.py --budget-s "${BUDGET_S:-150}" --summary-json "${SUMMARY:-benchmarks/results/summary.json}"

echo "gpu_check: done in $((SECONDS - started)) s"

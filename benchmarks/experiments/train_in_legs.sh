#!/bin/bash
# Session 10's meta-training runs (benchmarks/NOTES.md): the frozen CE-pretrained base, the transformed task pool
# with half the tasks of synthetic strokes, 1 thread, trained in 50-step legs (`--resume` between them) so that a
# run survives a cut, each leg's model kept as OUT/stepN.safetensors.
#   usage: benchmarks/experiments/train_in_legs.sh OUT STEPS MODEL_JSON LR [pudnet train options...]
#   (environment: BASE = the frozen base's weight file, THREADS = torch threads, LEG = steps per leg)
#   e.g.:  benchmarks/experiments/train_in_legs.sh runs/s10/proto 300 '{"loss": "metric", "prototype_update": true}' \
#              1e-3 --validation strokes
set -e
out=$1; steps=$2; model=$3; lr=$4; shift 4
base=${BASE:-python/pudnet/baselines/weights/pretrained-convnet3.safetensors}; leg=${LEG:-50}
for s in $(seq "$leg" "$leg" "$steps"); do
  [ -f "$out/step$s.safetensors" ] && continue
  resume=""; [ -f "$out/train_state.safetensors" ] && resume="--resume"
  pudnet train --out "$out" --steps "$s" --lr "$lr" --threads "${THREADS:-1}" --checkpoint-every "$leg" --validate-every "$leg" \
    --task-pool transformed --preset frozen-base-prototypes --model "$model" \
    --base-from "$base" --stroke-tasks 0.5 $resume "$@"
  cp "$out/checkpoint.safetensors" "$out/step$s.safetensors"
done

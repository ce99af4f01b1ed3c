#!/bin/bash
# Session 10's meta-training runs (benchmarks/NOTES.md): the frozen CE-pretrained base, the transformed task pool
# with half the tasks of synthetic strokes, 1 thread, trained in 50-step legs (`--resume` between them) so that a
# run survives a cut, each leg's model kept as OUT/stepN.safetensors.
#   usage: benchmarks/experiments/train_in_legs.sh OUT STEPS MODEL_JSON LR [pudnet train options...]
#   e.g.:  benchmarks/experiments/train_in_legs.sh runs/s10/proto 300 '{"loss": "metric", "prototype_update": true}' \
#              1e-3 --validation strokes
set -e
out=$1; steps=$2; model=$3; lr=$4; shift 4
for s in $(seq 50 50 "$steps"); do
  [ -f "$out/step$s.safetensors" ] && continue
  resume=""; [ -f "$out/train_state.safetensors" ] && resume="--resume"
  pudnet train --out "$out" --steps "$s" --lr "$lr" --threads 1 --checkpoint-every 50 --validate-every 50 \
    --task-pool transformed --preset frozen-base-prototypes --model "$model" \
    --base-from python/pudnet/baselines/weights/pretrained-convnet3.safetensors --stroke-tasks 0.5 $resume "$@"
  cp "$out/checkpoint.safetensors" "$out/step$s.safetensors"
done

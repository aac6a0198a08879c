#!/usr/bin/env bash
# Issue 6, item 5: the client trainer's time per GRPO step on CUDA against the CPU of the same
# machine, for the tiny model and for SmolLM2-135M's architecture (random weights: see
# bench/device_kit.py for why the real weights cannot travel). One call of the device tool:
#
#   here:   .venv/bin/python bench/device_kit.py build                 # .device-kit/, ~40 MB
#   device: run(command="bash bench/gpu_check.sh", carry=[".device-kit"], timeout_s=560)
#
# Writes step-time-*.json, step-time-device.md and log.txt to $OUT (8 files at most come back).
set -uo pipefail
OUT=${OUT:-runs/gpu-check}
STEPS=${STEPS:-8}
mkdir -p "$OUT"
export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/log.txt") 2>&1

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .device-kit/whl/*.whl || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, trl, peft, datasets, pydantic; print('torch', torch.__version__, \
'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'trl', trl.__version__, \
'peft', peft.__version__)" || exit 1
python3 bench/device_kit.py random-model --out /tmp/smollm2-arch || exit 1

# Each run is bounded, so one failure leaves time for the others; the CPU baselines run last.
arch=(--model smollm2 --model-folder /tmp/smollm2-arch --steps "$STEPS" --results-dir "$OUT")
timeout 120 python3 bench/step_time.py "${arch[@]}" --device cuda
timeout 120 python3 bench/step_time.py "${arch[@]}" --device cuda --bf16
timeout 90 python3 bench/step_time.py --model tiny --steps 20 --device cuda --results-dir "$OUT"
timeout 90 python3 bench/step_time.py --model tiny --steps 20 --device cpu --results-dir "$OUT"
timeout 150 python3 bench/step_time.py "${arch[@]}" --device cpu
python3 bench/device_kit.py summary "$OUT" | tee "$OUT/step-time-device.md"

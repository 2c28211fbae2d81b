#!/usr/bin/env bash
# The two INT8 forms on ONNX Runtime's CPU provider (docs/benchmarks.md, "INT8 vs FP32, ONNX Runtime CPU"):
# the default FP16 base (for TensorRT) and --high-precision-dtype fp32, for DeiT-Ti and ConViT-Ti at 224
# (random weights, 64 generated JPEGs to calibrate on), timed in one interleaved run.
#   bash docs/int8_cpu_bases.sh [WORK_DIR]      (from the repository root; default /tmp/int8_cpu_bases)
set -euo pipefail
VITC="$(pwd)/.venv/bin"
export PYTHONPATH="$(pwd)"
mkdir -p "${1:-/tmp/int8_cpu_bases}" && cd "${1:-/tmp/int8_cpu_bases}"
"$VITC/python" - <<'PY'
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vitc

rng = np.random.default_rng(0)
Path("photos").mkdir(exist_ok=True)
for i in range(64):
    ramp = np.linspace(0, 255, 320)[None, :, None] * np.ones((240, 1, 3)) + rng.normal(0, 40, (240, 320, 3))
    Image.fromarray(ramp.clip(0, 255).astype(np.uint8)).save(f"photos/{i}.jpg", quality=90)
Path("ckpt").mkdir(exist_ok=True)
for name in ("deit_tiny", "convit_tiny"):
    torch.manual_seed(0)
    vitc.save_checkpoint(f"ckpt/{name}.safetensors", vitc.create_model(name))
PY
common=(--dynamic-batch 1:8:32 --calib-dir photos --calib-images 64 --max-drop 100 -o export --force)
for m in deit_tiny convit_tiny; do
  "$VITC/vitc" export "ckpt/$m.safetensors" --run "$m" -p fp32 -p int8 "${common[@]}"
  "$VITC/vitc" export "ckpt/$m.safetensors" --run "${m}_fp32base" -p int8 --high-precision-dtype fp32 "${common[@]}"
done
lscpu | grep "Model name"
"$VITC/vitc" bench -b 8 -n 20 --rounds 3 --json bench.json --force \
  -e export/deit_tiny/model.fp32.onnx -e export/deit_tiny/model.int8.onnx -e export/deit_tiny_fp32base/model.int8.onnx \
  -e export/convit_tiny/model.fp32.onnx -e export/convit_tiny/model.int8.onnx \
  -e export/convit_tiny_fp32base/model.int8.onnx

#!/usr/bin/env bash
# One prepared GPU run of benchmarks/train_step.py, case (b) at 512 px in bf16 (issue 5's figures):
# batch 8 plain, channels-last, compiled, both; batch 1 with gradient checkpointing. Prints one
# line per run (it/s, peak VRAM, MFU). On the device machine, where diffusers travels as a wheel:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src && bash benchmarks/gpu_train_step.sh
# Not yet run: estimated at about 6 minutes on one H200 (five model builds, two compilations).
set -u
cd "$(dirname "$0")/.."
run() { python3 benchmarks/train_step.py --device cuda --resolution 512 --mixed-precision bf16 "$@" \
          || echo "FAILED: $*"; }
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
run --batch-size 8
run --batch-size 8 --channels-last
run --batch-size 8 --compile --warmup 8
run --batch-size 8 --channels-last --compile --warmup 8
run --batch-size 1 --gradient-checkpointing

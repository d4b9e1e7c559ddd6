#!/usr/bin/env bash
# GPU check for a lent device machine (see DEVELOPERS notes): the throughput benchmark, then a short
# real-data run (Fashion-MNIST, carried in .fmnist/) to see the compiled bf16 trainer learn.
# Usage there: bash scripts/device-check.sh   (timm travels as a wheel in .whl/; logs go to $OUT)
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 WANDB_MODE=disabled
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, timm, torchvision; print('torch', torch.__version__, 'timm', timm.__version__, 'torchvision', torchvision.__version__, 'cores', len(__import__('os').sched_getaffinity(0)))" | tee -a "$OUT/gpu.txt"
timeout "${BENCH_TIMEOUT:-300}" python3 -m hpsearch.bench --epochs "${BENCH_EPOCHS:-4}" 2>&1 | tee "$OUT/bench.log"
if [ -d .fmnist ] && [ "${FMNIST_EPOCHS:-10}" -gt 0 ]; then
  mkdir -p /tmp/fm/FashionMNIST/raw && for f in .fmnist/*.gz; do gunzip -c "$f" > "/tmp/fm/FashionMNIST/raw/$(basename "$f" .gz)"; done
  timeout "${FMNIST_TIMEOUT:-150}" python3 -m hpsearch.train --dataset=fashion_mnist --data_dir=/tmp/fm \
    --epochs="${FMNIST_EPOCHS:-10}" --warmup_epochs=1 --output_dir=/tmp/fm-out --metrics_file="$OUT/fmnist.jsonl" \
    --wandb=disabled 2>&1 | tee "$OUT/fmnist.log"
fi

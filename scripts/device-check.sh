#!/usr/bin/env bash
# GPU check, for any machine with a CUDA GPU and hpsearch installed: bash scripts/device-check.sh (from the
# checkout's root, which holds benchmarks/)
#  1. the throughput benchmark (python -m benchmarks.bench): the training step alone, the trainer on the PIL
#     path and on the batched path, and the batched path pinned to 2 cores;
#  2. the batched augmentation under torch.cuda.set_sync_debug_mode("error"): a step that reads a value back
#     from the GPU fails here;
#  3. a short real-data run on the batched path (Fashion-MNIST) to see the compiled bf16 trainer learn.
# Logs go to $OUT (default ./device-check-out). Settings: BENCH_ARGS (extra bench flags, e.g. "--epochs 3"),
# BENCH_TIMEOUT (s, default 900), FMNIST_EPOCHS (default 10, 0 skips the run), FMNIST_DIR (holding
# FashionMNIST/raw; Debian's dataset-fashion-mnist is found by itself, else it is downloaded there).
# On a lent machine without an index, wheels in .whl/ are installed first and .fmnist/*.gz is unpacked.
set -u
OUT=${OUT:-$PWD/device-check-out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 WANDB_MODE=disabled
status=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import os, torch, timm, torchvision, kornia; print('torch', torch.__version__, 'timm', timm.__version__, 'torchvision', torchvision.__version__, 'kornia', kornia.__version__, 'cores', len(os.sched_getaffinity(0)))" | tee -a "$OUT/gpu.txt"

# shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
timeout "${BENCH_TIMEOUT:-900}" python3 -m benchmarks.bench ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

timeout 600 python3 - <<'EOF' 2>&1 | tee "$OUT/sync-check.log"
# The batched path's steps, compiled as the trainer compiles them, must not wait for the GPU.
import torch
from hpsearch.params import TrainConfig
from hpsearch.train.augment import DeviceBatches
from hpsearch.train.data import ToDevice, load_dataset

cfg = TrainConfig(dataset="synthetic", train_subset=4096, val_subset=8, color_jitter=0.4)
data = load_dataset(cfg)
for aa in ("original", "cifar10", "rand-m9-n2-mstd0.5"):
    batches = DeviceBatches(TrainConfig(aa=aa, color_jitter=0.4), data, ToDevice(data, torch.device("cuda"), torch.channels_last), 0, 1, 512)
    batches.set_epoch(0)
    it = iter(batches)
    next(it), next(it)  # the epoch's index copy, and compilation
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    for _ in range(5):
        x, y = next(it)
    torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(x).all() and x.is_contiguous(memory_format=torch.channels_last)
    print(f"aa={aa}: 5 batched steps without a host sync")
EOF
[ "${PIPESTATUS[0]}" = 0 ] || status=1

if [ "${FMNIST_EPOCHS:-10}" -gt 0 ]; then
  FM=${FMNIST_DIR:-$OUT/data}
  if [ -d .fmnist ]; then
    mkdir -p "$FM/FashionMNIST/raw" && for f in .fmnist/*.gz; do gunzip -c "$f" > "$FM/FashionMNIST/raw/$(basename "$f" .gz)"; done
  fi
  download=false
  [ -e "$FM/FashionMNIST/raw/train-images-idx3-ubyte" ] || [ -d /usr/share/datasets/fashion-mnist ] || download=true
  timeout "${FMNIST_TIMEOUT:-600}" python3 -m hpsearch.train --dataset=fashion_mnist --data_dir="$FM" --download=$download \
    --augment=batched --epochs="${FMNIST_EPOCHS:-10}" --warmup_epochs=1 --output_dir="$OUT/fmnist-run" \
    --metrics_file="$OUT/fmnist.jsonl" --wandb=disabled 2>&1 | tee "$OUT/fmnist.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
exit $status

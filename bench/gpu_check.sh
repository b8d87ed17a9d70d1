#!/usr/bin/env bash
# Every CUDA path in one bounded run (under 8 minutes), for the rare lent GPU machine:
#   1. the machine: nvidia-smi, torch's view of the GPUs
#   2. bench/cuda_check.py: the engine on CUDA (bf16 autocast, fp16, fp32; GPU-resident data),
#      checkpoints across devices and resume, `fitserve up` on a GPU worker (predict through the
#      service; a `resources.device: cuda` job routed to it; a cpu job left waiting with its
#      reason), and a job's device kind kept across attempts
#   3. bench/train_throughput.py on CUDA: the engine against a plain CUDA loop, MLP and CNN
#      (with the compiled column where the bench has one)
#   4. bench/distributed.py on CUDA ranks (nccl) where the machine has several GPUs
# Each part runs under its own timeout; one that fails or hangs does not stop the next.
#
#   bash bench/gpu_check.sh [OUT_DIR]        (OUT_DIR defaults to $OUT, else /tmp/gpu_check)
set -u
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUT_DIR"
export PYTHONPATH=. PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
START=$(date +%s)

part() {  # part NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit} s, $(($(date +%s) - START)) s in)"
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.log"
  echo "=== $name: exit ${PIPESTATUS[0]}"
}

part machine 30 bash -c 'nvidia-smi || true; '"$PY"' -c "import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.device_count(), [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])"'
part cuda_paths 270 "$PY" bench/cuda_check.py --quick --parts env,train,checkpoints,service,placement --out "$OUT_DIR/cuda_check"
part throughput 110 "$PY" bench/train_throughput.py --quick --only mlp
part throughput_cnn 110 "$PY" bench/train_throughput.py --quick --only vgg
if [ -f bench/distributed.py ]; then
  part distributed 120 "$PY" bench/distributed.py --quick
fi
echo "=== done in $(($(date +%s) - START)) s; logs in $OUT_DIR"

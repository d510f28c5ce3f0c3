#!/usr/bin/env bash
# Full scale on a lent accelerator, in one call of at most 9 minutes (issue 28).
#
# On CPU first, at smoke size (a few minutes):
#   bash benchmarks/accelerator_run.sh /tmp/accel --smoke
# Then on the accelerator (the device tool, from the repository root):
#   run(command='bash benchmarks/accelerator_run.sh $OUT', carry=['.data', '.whl'],
#       timeout_s=590)
#
# It needs, beside the working tree (both folders are git-ignored):
#   .data/cifar10-jpeg.tar.gz  the JPEG copy of CIFAR-10 (../shared/data/),
#   .data/commit               the commit the tree is (git rev-parse HEAD),
#   .whl/*.whl                 Python packages the accelerator's image lacks
#                              (ml-collections), installed to /tmp/site.
# The image has JAX, PIL and PyTorch but no TensorFlow: the folder is decoded
# by PIL into the official tarball layout (bonnkd.data.folder_to_tarball; its
# docstring says how those pixels differ from TensorFlow's), and the runs
# write no TensorBoard events (--set tensorboard=False).
#
# In the seconds it has (BUDGET_S, 530 by default), it writes to OUT:
#   env.txt            the device, the CPU, the package versions, the commit;
#   throughput.txt     python -m benchmarks.throughput: ResNet-18, batch 128,
#                      bfloat16 and float32, the split on the device;
#   gpu.csv            nvidia-smi's utilisation and memory every 5 s;
#   table1.tar.gz      configs/plans/table1.py's run directories without
#                      their checkpoints, the sweep's logs and summary.md;
#   log.txt            everything printed.
set -u
out=${1:?usage: accelerator_run.sh OUT [--smoke]}
smoke=${2:-}
budget_s=${BUDGET_S:-530}
start=$(date +%s)
py=${PYTHON:-python3}
mkdir -p "$out"
exec > >(tee -a "$out/log.txt") 2>&1
export PYTHONUNBUFFERED=1
# XLA:CPU's flags are for CPU runs; timing them starts a child on the device.
export BONNKD_XLA_CPU_FLAGS=default
left_s() { echo $((budget_s - ($(date +%s) - start))); }

if compgen -G '.whl/*.whl' >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(cat .data/commit 2>/dev/null || git rev-parse HEAD)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  lscpu | grep -E '^(Model name|CPU family|Model|CPU\(s\)):'
  "$py" -c "
import importlib.metadata as m, jax
for p in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'chex',
          'ml-collections', 'numpy', 'pillow'):
  try:
    print(p, m.version(p))
  except m.PackageNotFoundError:
    print(p, 'absent')
print('devices', jax.devices())"
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

# The data: JPEG folder -> tarball, decoded by PIL.
scratch=$(mktemp -d)
tar -xzf .data/cifar10-jpeg.tar.gz -C "$scratch" || exit 1
"$py" -m bonnkd.data.folder_to_tarball "$scratch/cifar10-jpeg" \
  "$scratch/cifar-10-python.tar.gz" --decoder pil || exit 1

if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used \
    --format=csv -l 5 >"$out/gpu.csv" 2>&1 &
  smi=$!
fi

echo "== throughput ($(left_s) s left)"
if [ "$smoke" = --smoke ]; then
  bench=(--model resnet18 --dtype bfloat16 --data device --steps 1
         --rounds 1 --set batch_size=8)
else
  bench=(--model resnet18 --dtype bfloat16,float32 --data device --steps 50
         --rounds 3)
fi
timeout 120 "$py" -m benchmarks.throughput "${bench[@]}" \
  | tee "$out/throughput.txt"

# The sweep stops its runs at the budget; they keep their metrics.jsonl.
runs=$scratch/table1
sweep_min=$(( ($(left_s) - 25) / 6 ))
echo "== table1, budget $((sweep_min / 10)).$((sweep_min % 10)) min"
"$py" -m bonnkd.sweep configs/plans/table1.py --out "$runs" --parallel 3 \
  --budget_min "$((sweep_min / 10)).$((sweep_min % 10))" $smoke \
  --set data.source=tarball \
  --set "data.dir=$scratch/cifar-10-python.tar.gz" --set tensorboard=False
tar -czf "$out/table1.tar.gz" -C "$scratch" --exclude=checkpoints table1
[ -n "${smi:-}" ] && kill "$smi"
echo "== done in $(( $(date +%s) - start )) s"

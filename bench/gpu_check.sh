#!/usr/bin/env bash
# The GPU checks, one script, at most ~8 minutes on one H100 (docs/zoo.md, "On a GPU"):
#   1. a CUDA torch and a GPU, or one `error:` line and exit 2 at once;
#   2. weightsim-run on the GPU: the demo zoo trained there (zoo.accelerator=gpu) and HTT there
#      (protocol.device=cuda: chain walk, Grams and classifier), <= 140 s;
#   3. python -m bench.gpu_check: a paper-scale population of every image arch (tiny ImageNet
#      64x64x3: mlp4, plainnet5; CIFAR-100 32x32x3: mlp4, plainnet5, plainnet6, resnet5,
#      resnet_mlp12) on synthetic samples, up to 300 steps or 15 s each: steps/s, peak memory,
#      <= 300 s (the rows printed before a time-out stay in the log).
# Run from anywhere: bash bench/gpu_check.sh. Output also goes to $OUT/gpu_check.log (OUT: default
# /tmp/gpu_check). GPU_CHECK_DRY=1: the same steps at tiny sizes on the CPU (the plumbing only).
# PY: the interpreter (default .venv/bin/python, else python3). Exit 0 when every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
DRY=${GPU_CHECK_DRY:-0}
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
failed=0
t0=$SECONDS

# 1. fail fast without a GPU
if [ "$DRY" != 1 ]; then
  "$PY" -c "from bench.zoo import require_cuda; require_cuda('bench/gpu_check.sh')" || exit 2
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv 2>/dev/null || true
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# 2. a zoo trained on the GPU, then HTT on the GPU
if [ "$DRY" = 1 ]; then
  run=(zoo.accelerator=cpu protocol.device=cpu dataset.train_tasks=3 dataset.unseen_tasks=2 zoo.seeds=4
       zoo.epochs=2 protocol.train_seeds=3 protocol.queries=2 protocol.n_permutations=3 protocol.repeats=1)
else
  run=(zoo.accelerator=gpu protocol.device=cuda)
fi
rm -rf "$OUT/htt_run"
if timeout 140 "$PY" -c "from weightsim.cli import run_main; run_main()" experiment=demo progress=false logger=none \
    "zoo_dir=$OUT/htt_run/zoo" "hydra.run.dir=$OUT/htt_run" "${run[@]}"; then
  [ -s "$OUT/htt_run/report.json" ] || { echo "failed: HTT wrote no report.json"; failed=1; }
else
  echo "failed: weightsim-run on the GPU (exit $?)"; failed=1
fi
echo "htt done at $((SECONDS - t0)) s"

# 3. paper-scale populations of every image arch
if [ "$DRY" = 1 ]; then
  timeout 300 "$PY" -m bench.gpu_check --dry || failed=1
else
  timeout 300 "$PY" -m bench.gpu_check --steps 300 --seconds 15 || failed=1
fi
echo "populations done at $((SECONDS - t0)) s"

if [ "$failed" = 0 ]; then echo "gpu check: ok ($((SECONDS - t0)) s)"; else echo "gpu check: FAILED ($((SECONDS - t0)) s)"; fi
exit "$failed"

#!/usr/bin/env bash
# Every run behind the tables of experiments/*.md, in the order of the files. From the repository
# root after `make install`:
#   DATA=/path/to/datasets bash experiments/reproduce.sh [name ...]     (default: every run)
# Zoos go to $ZOOS (default zoos/; a zoo already there is reused: only missing nets train), each
# run's report to outputs/experiments/<name>/ (report.md, report.csv, run.json, plots).
# DATA holds names/ and tiny-imagenet-200-subset40/ (docs/data.md says how to get them).
set -euo pipefail
cd "$(dirname "$0")/.."
ZOOS=${ZOOS:-zoos}
DATA=${DATA:-data}
RUN=".venv/bin/weightsim-run progress=false"
HTT=".venv/bin/weightsim-htt progress=false"
OUT=outputs/experiments
C="dataset.train_tasks=10 dataset.unseen_tasks=5 zoo.seeds=20 zoo.epochs=15"  # architectures_digits.md
IMG="$C dataset.image=true"
TINY="dataset=tiny_imagenet dataset.data_dir=$DATA/tiny-imagenet-200-subset40 dataset.train_tasks=8 \
dataset.unseen_tasks=2 dataset.size=32 dataset.train_per_class=250 arch=plainnet5 zoo.seeds=12 zoo.epochs=10 \
protocol.queries=4"

run() {  # run NAME APP OVERRIDES...: one timed run into $OUT/NAME
  local name=$1 app=$2; shift 2
  local start=$SECONDS
  $app "$@" hydra.run.dir=$OUT/$name > /dev/null
  echo "$name: $((SECONDS - start)) s" | tee -a $OUT/times.txt
}

declare -A RUNS=(
  # digits_mlp.md: the demo
  [demo]="run demo '$RUN' experiment=demo zoo_dir=$ZOOS/demo"
  # architectures_digits.md
  [mlp4]="run mlp4 '$RUN' arch=mlp4 $C zoo_dir=$ZOOS/digits-mlp4"
  [pn5-nobn]="run pn5-nobn '$RUN' arch=plainnet5 arch.norm=none $IMG zoo_dir=$ZOOS/digits-pn5-none"
  [pn5-nobn-fro]="run pn5-nobn-fro '$HTT' arch=plainnet5 arch.norm=none $IMG chains.scale=fro zoo_dir=$ZOOS/digits-pn5-none"
  [pn5-bn]="run pn5-bn '$RUN' arch=plainnet5 arch.norm=bn $IMG zoo_dir=$ZOOS/digits-pn5-bn"
  [pn5-bn-fro]="run pn5-bn-fro '$HTT' arch=plainnet5 arch.norm=bn $IMG chains.scale=fro zoo_dir=$ZOOS/digits-pn5-bn"
  [pn5-bn-ignore]="run pn5-bn-ignore '$HTT' arch=plainnet5 arch.norm=bn $IMG chains.bn=ignore zoo_dir=$ZOOS/digits-pn5-bn"
  [pn5-bn-ignore-fro]="run pn5-bn-ignore-fro '$HTT' arch=plainnet5 arch.norm=bn $IMG chains.bn=ignore chains.scale=fro zoo_dir=$ZOOS/digits-pn5-bn"
  [pn5-bn-fold-fro]="run pn5-bn-fold-fro '$HTT' arch=plainnet5 arch.norm=bn $IMG chains.bn=fold chains.scale=fro zoo_dir=$ZOOS/digits-pn5-bn"
  [resmlp12]="run resmlp12 '$RUN' arch=resnet_mlp12 $C zoo_dir=$ZOOS/digits-resmlp12"
  [resmlp12-ignore]="run resmlp12-ignore '$HTT' arch=resnet_mlp12 $C chains.bn=ignore zoo_dir=$ZOOS/digits-resmlp12"
  # real_data.md
  [names]="run names '$RUN' dataset=namedata dataset.data_dir=$DATA/names arch=gru2 zoo.seeds=20 zoo.epochs=0.5 protocol.queries=4 zoo_dir=$ZOOS/names-gru2"
  [tiny]="run tiny '$RUN' $TINY zoo_dir=$ZOOS/tiny-pn5"
  [tiny-ignore]="run tiny-ignore '$HTT' $TINY chains.bn=ignore zoo_dir=$ZOOS/tiny-pn5"
)
# compare.md: every compare measure on the demo zoo and on a small PlainNet-5 zoo (retrieval only)
CMP=".venv/bin/weightsim-compare progress=false protocol.protocols=[retrieval] protocol.repeats=1"
PN5S="arch=plainnet5 dataset.image=true dataset.train_tasks=10 dataset.unseen_tasks=5 zoo.seeds=10 zoo.epochs=15"
RUNS[zoo-demo]="run zoo-demo '.venv/bin/weightsim-zoo progress=false' experiment=demo zoo_dir=$ZOOS/demo"
RUNS[compare-demo]="run compare-demo '$CMP' zoo_dir=$ZOOS/demo"
RUNS[zoo-pn5-small]="run zoo-pn5-small '.venv/bin/weightsim-zoo progress=false' $PN5S zoo_dir=$ZOOS/digits-pn5-small"
RUNS[compare-pn5]="run compare-pn5 '$CMP' zoo_dir=$ZOOS/digits-pn5-small"
# architectures_digits.md, network factors: a classifier trained on PlainNet-5, tested on other nets
# (the same-net reference is pn5-nobn-fro without BN, pn5-bn with BN)
for norm in none bn; do
  fro=$([ $norm = none ] && echo chains.scale=fro || true)
  for net in "leaky:arch=plainnet5 arch.activation=leaky_relu" "depth:arch=plainnet6" "res5:arch=resnet5"; do
    name=${net%%:*}; arch=${net#*:}
    RUNS[zoo-$name-$norm]="run zoo-$name-$norm '.venv/bin/weightsim-zoo progress=false' $arch arch.norm=$norm $IMG zoo_dir=$ZOOS/digits-$name-$norm"
    RUNS[cross-$name-$norm]="run cross-$name-$norm '$HTT' arch=plainnet5 arch.norm=$norm $IMG $fro zoo_dir=$ZOOS/digits-pn5-$norm eval_zoo_dir=$ZOOS/digits-$name-$norm"
  done
done
ORDER="demo mlp4 pn5-nobn pn5-nobn-fro pn5-bn pn5-bn-fro pn5-bn-ignore pn5-bn-ignore-fro pn5-bn-fold-fro resmlp12
resmlp12-ignore zoo-leaky-none zoo-depth-none zoo-res5-none  cross-leaky-none cross-depth-none
cross-res5-none zoo-leaky-bn zoo-depth-bn zoo-res5-bn cross-leaky-bn cross-depth-bn cross-res5-bn
names tiny tiny-ignore zoo-demo compare-demo zoo-pn5-small compare-pn5"
mkdir -p $OUT
for name in ${@:-$ORDER}; do
  [ -n "${RUNS[$name]:-}" ] || { echo "unknown run '$name': choose from" $ORDER >&2; exit 2; }
  eval "${RUNS[$name]}"
done

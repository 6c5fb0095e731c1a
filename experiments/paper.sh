#!/usr/bin/env bash
# The paper's items at scale=cpu, then the studies of where the CNN claim stands (experiments/paper.md).
# From the repository root after `make install`:
#   DATA=/path/to/datasets bash experiments/paper.sh [name ...]     (default: all, in this order)
# DATA holds cifar-100-python-partial/cifar-100-python, tiny-imagenet-200-subset40 and names
# (docs/data.md). Zoos go to zoos/ (shared between the items), each sweep to multirun/<name>-cpu/
# with its collected/ table and figure; wall times are appended to multirun/times.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data}
BIN=${BIN:-.venv/bin}
CIFAR="dataset.data_dir=$DATA/cifar-100-python-partial/cifar-100-python"
TINY="dataset.data_dir=$DATA/tiny-imagenet-200-subset40"
NAMES="dataset.data_dir=$DATA/names"
mkdir -p multirun

timed() {  # timed NAME COMMAND...: run; record wall and CPU seconds (and the exit status) in multirun/times.txt
  local name=$1 start=$SECONDS; shift
  local t0; t0=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)  # this shell's children's CPU ticks so far
  "$@" > multirun/$name.log 2>&1
  local rc=$?
  local cpu; cpu=$(awk -v t0="$t0" -v hz="$(getconf CLK_TCK)" '{printf "%.0f", ($14 + $15 + $16 + $17 - t0) / hz}' /proc/$$/stat)
  echo "$name: $((SECONDS - start)) s wall, $cpu s CPU (exit $rc)" | tee -a multirun/times.txt
}

copy_zoo() {  # copy_zoo FROM TO: a study starts from an item's zoo (same seeds: the same nets) if TO is new
  [ -d "zoos/$2" ] || { [ -d "zoos/$1" ] && cp -r "zoos/$1" "zoos/$2"; }
}

item() {
  case $1 in
    fig3_cifar100|fig4_factors|fig5_cross_network|table2_resnet_mlp12)
      timed $1 $BIN/weightsim-run -m experiment=$1 $CIFAR ;;
    fig2_tiny_imagenet) timed $1 $BIN/weightsim-run -m experiment=$1 $TINY ;;
    table1_namedata) timed $1 $BIN/weightsim-run -m experiment=$1 $NAMES ;;
    ablation_bn|ablation_scale|ablation_sketch) timed $1 $BIN/weightsim-htt -m experiment=$1 $TINY ;;
    curve_epochs)
      for a in mlp4 plainnet5; do copy_zoo tiny_imagenet-$a-cpu tiny_imagenet-$a-cpu-e10.0; done
      timed $1 $BIN/weightsim-run -m experiment=$1 $TINY ;;
    curve_seeds)
      for a in mlp4 plainnet5; do copy_zoo tiny_imagenet-$a-cpu curves-tiny_imagenet-$a-cpu; done
      timed $1 $BIN/weightsim-run -m experiment=$1 $TINY ;;
    *) echo "unknown item '$1'" >&2; return 2 ;;
  esac
}

ALL="fig3_cifar100 fig4_factors fig5_cross_network table2_resnet_mlp12 fig2_tiny_imagenet table1_namedata
ablation_bn ablation_scale ablation_sketch curve_seeds curve_epochs"
for name in ${@:-$ALL}; do item $name; done

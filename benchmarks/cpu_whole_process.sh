#!/usr/bin/env bash
# Whole processes from outside, the issue-13 CPU comparison: `auxcli run` vs the reference training script
# on the same number of generated images (10,000 train, 2,000 test, 100 classes), ResNet-20, batch 128,
# 2 epochs, each with a test pass and a checkpoint per epoch. Prints wall seconds and the ratio.
# Run on a quiet machine (nothing else on the cores).   bash benchmarks/cpu_whole_process.sh [DEPTH] [THREADS]
# A quick check of the script itself: PER_CLASS=4 bash benchmarks/cpu_whole_process.sh 8 1
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
DEPTH="${1:-20}"; THREADS="${2:-2}"; PER_CLASS="${PER_CLASS:-100}"
WORK="$(mktemp -d)"
cat > "$WORK/cpu-bench.yaml" <<YAML
name: cpu-bench
data: {dataset: synthetic, root: $WORK/data, synthetic: {train_per_class: $PER_CLASS, test_per_class: $((PER_CLASS / 5 > 0 ? PER_CLASS / 5 : 1))}}
model: {backbone: resnet, depth: $DEPTH}
train: {epochs: 2, milestones: [1]}
runtime: {device: cpu, threads: $THREADS, runs_dir: $WORK/runs}
tracking: {uri: "sqlite:///$WORK/mlflow.db"}
YAML
python -m auxcli run "$WORK/cpu-bench.yaml" --force > /dev/null  # generates the data set once, untimed
start=$(date +%s.%N); python -m auxcli run "$WORK/cpu-bench.yaml" --force; auxcli_s=$(echo "$(date +%s.%N) - $start" | bc)
start=$(date +%s.%N); python benchmarks/reference_run.py --depth "$DEPTH" --threads "$THREADS" --workers 2 \
  --images $((PER_CLASS * 100)) --test-images $(((PER_CLASS / 5 > 0 ? PER_CLASS / 5 : 1) * 100))
reference_s=$(echo "$(date +%s.%N) - $start" | bc)
echo "auxcli run: ${auxcli_s} s, reference script: ${reference_s} s, speed-up $(echo "scale=2; $reference_s / $auxcli_s" | bc)x"
rm -rf "$WORK"

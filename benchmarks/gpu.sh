#!/usr/bin/env bash
# Every GPU figure of issue 13 in one run (about 6-8 minutes on one H100): auxcli vs the hand-written
# loop for ResNet-110 and PyramidNet-110 (alpha 270), eager and compiled (reduce-overhead vs max-autotune),
# channels_last on/off, achieved FLOP/s vs the card's bf16 peak, the fp32-vs-bf16 accuracy parity check,
# K = 1, 2, 4 concurrent runs on the card with the Table 5 wall time, and the whole suite's estimate.
#
# Installs nothing. The figures come from `python -m auxcli.perf`, which imports only torch, torchvision,
# numpy and PIL (a GPU machine may lack pydantic, MLflow and DVC; tests/test_perf.py checks this path runs
# with them blocked). `auxcli plan specs/paper --estimate` runs too when auxcli's dependencies are
# importable; otherwise (or if it fails) the suite estimate is computed here from the measured rates.
#
#   bash benchmarks/gpu.sh 2>&1 | tee gpu-figures.txt
#   DEVICE=cpu SIZES=small SKIP_COMPILE=1 bash benchmarks/gpu.sh   # a smoke test of the script itself
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PERF="python -m auxcli.perf"
OUT="${OUT:-$(mktemp -d)}"
STEP_TIMEOUT="${STEP_TIMEOUT:-240}"  # seconds per measurement: a stuck compile costs one figure, not the run
DEVICE="${DEVICE:-cuda}"
if [ "${SIZES:-full}" = small ]; then
  RESNET="--backbone resnet --depth 8 --base-width 4"; PYRAMIDNET="--backbone pyramidnet --depth 8 --alpha 8"
  RSTEPS=2; PSTEPS=2; PARITY="--depth 8 --epochs 2 --train-images 512 --test-images 256"; PROCESSES="1 2"
else
  RESNET="--backbone resnet --depth 110"; PYRAMIDNET="--backbone pyramidnet --depth 110 --alpha 270"
  RSTEPS=40; PSTEPS=20; PARITY="--epochs 15"; PROCESSES="1 2 4"
fi

section() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
bench() {  # bench NAME ARGS...: text to the terminal, JSON kept for the summary
  local name=$1; shift
  rm -f "$OUT/$name.json"
  if [ -n "${SKIP_COMPILE:-}" ] && [[ " $* " == *" --compile "* ]]; then return; fi
  section "$name"
  timeout "$STEP_TIMEOUT" $PERF bench --device "$DEVICE" --format json "$@" > "$OUT/$name.json" \
    && python -c "import json,sys; from auxcli.perf.measure import BenchResult, format_text; \
print(format_text(BenchResult(**json.load(open(sys.argv[1])))))" "$OUT/$name.json" \
    || { echo "  FAILED or timed out after ${STEP_TIMEOUT}s"; rm -f "$OUT/$name.json"; }
}

section "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'torchvision', torchvision.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')"

# ResNet-110 (Tables 4, 5): target >= 25,000 images/s end to end, >= 3x the reference loop.
bench resnet110-eager $RESNET --steps $RSTEPS
bench resnet110-eager-contiguous $RESNET --steps $RSTEPS --channels-last off --no-reference
bench resnet110-reduce-overhead $RESNET --steps $RSTEPS --compile --compile-mode reduce-overhead --no-reference
bench resnet110-max-autotune $RESNET --steps $RSTEPS --compile --compile-mode max-autotune --no-reference
# PyramidNet-110 alpha 270 (Tables 1-3): target >= 8,000 images/s end to end, >= 3x the reference loop.
bench pyramidnet110-eager $PYRAMIDNET --steps $PSTEPS
bench pyramidnet110-reduce-overhead $PYRAMIDNET --steps $PSTEPS --compile --compile-mode reduce-overhead --no-reference

section "precision parity: ResNet (20 unless SIZES=small), fp32 vs bf16 autocast, same seeds and data"
timeout 300 $PERF parity --device "$DEVICE" $PARITY || echo "  FAILED or timed out"

section "concurrent runs on one card: ResNet-110, eager, auto precision (Table 5 = 24 runs)"
timeout 300 $PERF sharing --processes $PROCESSES --runs 24 -- $RESNET --steps $RSTEPS --device "$DEVICE" \
  || echo "  FAILED or timed out"

section "whole specs/paper suite on this card, one run at a time"
if [ "$DEVICE" = cuda ] && python -c "import pydantic, ruamel.yaml, tabulate, typer, mlflow" 2>/dev/null \
  && timeout 300 python -m auxcli plan specs/paper --estimate --cache "$OUT/rates.json" > "$OUT/plan.txt"; then
  sed -n '/^Table 1/,$p' "$OUT/plan.txt"
else
  # 6 PyramidNet trainings (Tables 1, 3), 3 PyramidNet linear probes (Table 2, forward cost), 27 ResNet-110
  # trainings (Tables 4, 5); 300 epochs of 50,000 training and 10,000 test images (forward: a third of a step).
  python - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def rate(name):
    try:
        return json.loads((out / f"{name}.json").read_text())["end_to_end_images_per_second"]
    except (OSError, ValueError, KeyError):
        return None  # not measured (failed, timed out or skipped)
def best(*names):
    rates = [r for r in map(rate, names) if r]
    return max(rates) if rates else None
res = best("resnet110-eager", "resnet110-reduce-overhead", "resnet110-max-autotune")
pyr = best("pyramidnet110-eager", "pyramidnet110-reduce-overhead")
if res is None or pyr is None:
    sys.exit("  no estimate: a ResNet-110 or PyramidNet-110 measurement is missing")
epoch = lambda rate, probe=False: 50_000 / (3 * rate if probe else rate) + 10_000 / (3 * rate)
hours = {"Tables 1+3 (6 PyramidNet-110 runs)": 6 * 300 * epoch(pyr),
         "Table 2 (3 PyramidNet-110 probes)": 3 * 300 * epoch(pyr, probe=True),
         "Tables 4+5 (27 ResNet-110 runs)": 27 * 300 * epoch(res)}
for name, seconds in hours.items():
    print(f"  {name}: {seconds / 3600:.1f} h")
print(f"  whole suite (36 runs, best mode per backbone): {sum(hours.values()) / 3600:.1f} h (target < 8 h)")
PY
fi
section "done; JSON in $OUT"

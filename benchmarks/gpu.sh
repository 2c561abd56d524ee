#!/usr/bin/env bash
# Every GPU figure of issue 13 in one run, within a time budget (BUDGET seconds, default 450: the device
# tool allows 10 minutes a command and 15 a task). The figures come in order of importance, so a budget
# spent early costs the least important ones, each said as skipped:
#   1. auxcli vs the hand-written loop, eager: ResNet-110 and PyramidNet-110 (alpha 270), with achieved
#      FLOP/s vs the card's bf16 peak; ResNet-110 with channels_last off;
#   2. the fp32-vs-bf16 accuracy parity check (ResNet-20);
#   3. K = 1, 2, 4 concurrent runs on the card, with the Table 5 wall time;
#   4. compiled: ResNet-110 reduce-overhead, PyramidNet-110 reduce-overhead, ResNet-110 max-autotune
#      (compilation takes minutes; each gets what is left of the budget, at most STEP_TIMEOUT);
#   5. the whole specs/paper suite's estimate from the best rate per backbone.
#
# Installs nothing. The figures come from `python -m auxcli.perf`, which imports only torch, torchvision,
# numpy and PIL (a GPU machine may lack pydantic, MLflow and DVC; tests/test_perf.py checks this path runs
# with them blocked, and it was run in a venv holding only torch and torchvision).
#
#   bash benchmarks/gpu.sh 2>&1 | tee gpu-figures.txt
#   DEVICE=cpu SIZES=small SKIP_COMPILE=1 bash benchmarks/gpu.sh   # a smoke test of the script itself
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PERF="python -m auxcli.perf"
OUT="${OUT:-$(mktemp -d)}"
DEADLINE=$(( $(date +%s) + ${BUDGET:-450} ))
STEP_TIMEOUT="${STEP_TIMEOUT:-240}"  # seconds per measurement at most: a stuck compile costs one figure
DEVICE="${DEVICE:-cuda}"
if [ "${SIZES:-full}" = small ]; then
  RESNET="--backbone resnet --depth 8 --base-width 4"; PYRAMIDNET="--backbone pyramidnet --depth 8 --alpha 8"
  RSTEPS=2; PSTEPS=2; PARITY="--depth 8 --epochs 2 --train-images 512 --test-images 256"; PROCESSES="1 2"
else
  RESNET="--backbone resnet --depth 110"; PYRAMIDNET="--backbone pyramidnet --depth 110 --alpha 270"
  RSTEPS=40; PSTEPS=20; PARITY="--epochs 15"; PROCESSES="1 2 4"
fi

# limit WANT: the seconds a step may take, WANT at most, keeping 5 s for the final estimate; fails
# (the step is skipped) when fewer than 15 seconds are left.
limit() {
  local left=$(( DEADLINE - $(date +%s) - 5 ))
  if [ "$left" -lt 15 ]; then return 1; fi
  echo $(( $1 < left ? $1 : left ))
}
section() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
bench() {  # bench NAME ARGS...: text to the terminal, JSON kept for the summary
  local name=$1 seconds; shift
  rm -f "$OUT/$name.json"
  if [ -n "${SKIP_COMPILE:-}" ] && [[ " $* " == *" --compile "* ]]; then return; fi
  section "$name"
  seconds=$(limit "$STEP_TIMEOUT") || { echo "  skipped: the ${BUDGET:-450}s budget is spent"; return; }
  timeout "$seconds" $PERF bench --device "$DEVICE" --format json "$@" > "$OUT/$name.json" \
    && python -c "import json,sys; from auxcli.perf.measure import BenchResult, format_text; \
print(format_text(BenchResult(**json.load(open(sys.argv[1])))))" "$OUT/$name.json" \
    || { echo "  FAILED or timed out after ${seconds}s"; rm -f "$OUT/$name.json"; }
}
timed() {  # timed WANT COMMAND...: COMMAND within the budget, WANT seconds at most
  local seconds; seconds=$(limit "$1") || { echo "  skipped: the ${BUDGET:-450}s budget is spent"; return; }
  shift
  timeout "$seconds" "$@" || echo "  FAILED or timed out after ${seconds}s"
}

section "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'torchvision', torchvision.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')"

# 1. ResNet-110 (Tables 4, 5): target >= 25,000 images/s end to end, >= 3x the reference loop;
#    PyramidNet-110 alpha 270 (Tables 1-3): target >= 8,000 images/s end to end, >= 3x the reference loop.
bench resnet110-eager $RESNET --steps $RSTEPS
bench pyramidnet110-eager $PYRAMIDNET --steps $PSTEPS
bench resnet110-eager-contiguous $RESNET --steps $RSTEPS --channels-last off --no-reference

# 2. Does bf16 autocast (the CUDA default) change results?
section "precision parity: ResNet (20 unless SIZES=small), fp32 vs bf16 autocast, same seeds and data"
timed 240 $PERF parity --device "$DEVICE" $PARITY

# 3. `--concurrent K`: which K to make the default.
section "concurrent runs on one card: ResNet-110, eager, auto precision (Table 5 = 24 runs)"
timed 180 $PERF sharing --processes $PROCESSES --runs 24 -- $RESNET --steps $RSTEPS --device "$DEVICE"

# 4. Compiled (CUDA graphs): which mode `compile_mode: auto` should be.
bench resnet110-reduce-overhead $RESNET --steps $RSTEPS --compile --compile-mode reduce-overhead --no-reference
bench pyramidnet110-reduce-overhead $PYRAMIDNET --steps $PSTEPS --compile --compile-mode reduce-overhead --no-reference
bench resnet110-max-autotune $RESNET --steps $RSTEPS --compile --compile-mode max-autotune --no-reference

# 5. The study's wall time on this card.
section "whole specs/paper suite on this card, one run at a time"
if [ "$DEVICE" = cuda ] && python -c "import pydantic, ruamel.yaml, tabulate, typer, mlflow" 2>/dev/null \
  && seconds=$(limit 300) && [ "$seconds" -ge 60 ] \
  && timeout "$seconds" python -m auxcli plan specs/paper --estimate --cache "$OUT/rates.json" > "$OUT/plan.txt"; then
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

#!/usr/bin/env bash
# The device check (issue 22): what only a GPU can show, in one run of at most 8 minutes on one GPU.
# It prints as it goes and writes everything to one results file. In order:
#   1. the CUDA tests (tests/test_gpu.py, tests/test_trainer.py; the CUDA-only ones run instead of skipping);
#   2. a CPU-versus-CUDA accuracy comparison of one proxy on digits (benchmarks/cpu_vs_cuda.py: within noise?);
#   3. explore search --device cuda --dataset digits --trials 6 --jobs 2 (a new CUDA study: the GPU preset);
#   4. explore latency resnet50 --device cuda at batch 1 and at batch 64 (each a new table, fitted once);
#   5. benchmarks/proxy_throughput.py --device cuda --profile, 64 steps an epoch, images/s from epoch 2;
#   6. benchmarks/jobs_scaling.py --device cuda: --jobs 1 against 4 (the target: 2x the trials/hour)
#      on trials of 20 epochs of 25 steps.
# Each step has its own time limit: 455 s together, which leaves 25 s of the 8 minutes for installing
# the wheels; a step that fails or times out is recorded and the next runs.
#
# The GPU machine has torch but not optuna, fvcore, plotly and the rest: carry them as wheels.
#   here, with the package index:  bash benchmarks/gpu_check.sh --fetch-wheels [PYTHON_VERSION]
#       downloads the project's dependencies but torch (pyproject.toml), and pytest, into wheels/
#       (git-ignored); give the GPU machine's Python version (e.g. 3.11) when it differs from this one's.
#       All of them come to 95 MB for CPython 3.11, over the 64 MiB a device call carries; numpy,
#       scipy and pillow are 58 MB of it and often come with torch: HAVE="numpy scipy pillow" leaves
#       out the wheels of packages the GPU machine already has (check with `pip list` there).
#   there:                          bash benchmarks/gpu_check.sh [--results FILE]
#       installs what is missing from wheels/ (pip install --no-index --find-links wheels/), then runs.
#       The results go to FILE, default $OUT/gpu_check_results.txt where $OUT is set, else
#       ./gpu_check_results.txt.
#   anywhere:                       bash benchmarks/gpu_check.sh --dry-run
#       checks that every command parses (explore's with --help, the benchmarks' with --dry-run,
#       the tests collected) and that every file it needs exists; no GPU needed (tests/test_gpu.py).
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
WHEELS="$ROOT/wheels"
RESULTS="${OUT:+$OUT/}gpu_check_results.txt"
DRY=0
FAILED=0
NEEDED=(pyproject.toml cli.py tests/test_gpu.py tests/test_trainer.py benchmarks/cpu_vs_cuda.py
        benchmarks/proxy_throughput.py benchmarks/jobs_scaling.py)

case "${1:-}" in
  --dry-run) DRY=1 ;;
  --results) RESULTS=${2:?--results needs a file} ;;
  --fetch-wheels) FETCH=1 ;;
  "") ;;
  *) echo "error: unknown argument '$1'; use --dry-run, --results FILE or --fetch-wheels [PYTHON_VERSION]" >&2; exit 2 ;;
esac
RESULTS=$(realpath -m "$RESULTS")  # the steps run in a scratch folder

# The project's dependencies but torch, from pyproject.toml (one list), and what the tests need.
requirements() {
  "$PY" - "$ROOT/pyproject.toml" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
names = [re.sub(r"\s*#.*", "", line).strip().strip('",') for line in block.splitlines()]
print(" ".join(n for n in names if n and not n.startswith("torch")), "pytest pytest-timeout hypothesis")
EOF
}

if [ "${FETCH:-0}" = 1 ]; then
  target=()
  [ -n "${2:-}" ] && target=(--python-version "$2" --platform manylinux2014_x86_64 --only-binary=:all:)
  # shellcheck disable=SC2046
  "$PY" -m pip download -q -d "$WHEELS" "${target[@]}" $(requirements) || exit 2
  for sdist in "$WHEELS"/*.tar.gz; do  # fvcore and iopath come as sources: built here, pure Python
    [ -e "$sdist" ] && "$PY" -m pip wheel -q --no-deps -w "$WHEELS" "$sdist" && rm "$sdist"
  done
  for name in ${HAVE:-}; do rm -f "$WHEELS/${name//-/_}"-*.whl "$WHEELS/$name"-*.whl; done
  du -sh "$WHEELS"
  exit 0
fi

say() { echo "$*" | tee -a "$RESULTS"; }

missing() {  # the requirements not installed, by distribution name
  # shellcheck disable=SC2046
  "$PY" - $(requirements) <<'EOF'
import re, sys
from importlib import metadata
out = []
for req in sys.argv[1:]:
    try:
        metadata.version(re.split(r"[\[<>=!~ ]", req)[0])
    except metadata.PackageNotFoundError:
        out.append(req)
print(" ".join(out))
EOF
}

# run_step NAME SECONDS COMMAND...: in a dry run the command (given its checking flag) must exit 0.
run_step() {
  local name=$1 seconds=$2
  shift 2
  if [ "$DRY" = 1 ]; then
    if out=$("$@" 2>&1 >/dev/null); then echo "ok    $name: $*"; else echo "FAIL  $name: $* -> $(tail -c 300 <<<"$out")"; FAILED=1; fi
    return
  fi
  say ""
  say "== $name (at most ${seconds} s): $*"
  local start=$SECONDS rc
  timeout --kill-after=10 "$seconds" "$@" 2>&1 | tee -a "$RESULTS"
  rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || FAILED=1
  say "-- $name: exit $rc after $((SECONDS - start)) s$([ "$rc" = 124 ] && echo ' (timed out)')"
}

for f in "${NEEDED[@]}"; do
  [ -e "$ROOT/$f" ] || { echo "error: $f is missing (run from a checkout of the project)" >&2; exit 2; }
done

if [ "$DRY" = 1 ]; then
  EXPLORE_CHECK=--help; BENCH_CHECK=--dry-run; TEST_CHECK=--collect-only
  echo "dry run: every file needed exists (${NEEDED[*]}); checking that every command parses"
else
  EXPLORE_CHECK=; BENCH_CHECK=; TEST_CHECK=
  : > "$RESULTS"
  say "gpu_check $(date -u +%FT%TZ) on $(hostname): $(nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader 2>/dev/null | head -1 || echo 'no nvidia-smi'); $(nproc) CPUs"
  say "torch: $("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda, "available:", torch.cuda.is_available())')"
  todo=$(missing)
  if [ -n "$todo" ]; then
    [ -d "$WHEELS" ] || { say "error: missing $todo and no $WHEELS: run --fetch-wheels where there is an index"; exit 2; }
    say "installing from $WHEELS: $todo"
    # shellcheck disable=SC2086
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" $todo 2>&1 | tee -a "$RESULTS" || exit 2
  fi
fi

SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
cd "$SCRATCH" || exit 2  # studies/ and pages land here, not in the checkout

run_step "CUDA tests" 90 "$PY" -m pytest -q -p no:cacheprovider -rs $TEST_CHECK \
  "$ROOT/tests/test_gpu.py" "$ROOT/tests/test_trainer.py"
run_step "CPU vs CUDA accuracy" 55 "$PY" "$ROOT/benchmarks/cpu_vs_cuda.py" --device cuda --seeds 3 --epochs 3 $BENCH_CHECK
run_step "search on CUDA" 60 "$PY" -m cli search --budget 2GFLOPs --device cuda --dataset digits --trials 6 --jobs 2 \
  --study gpu-check $EXPLORE_CHECK
run_step "latency, batch 1" 70 "$PY" -m cli latency resnet50 --device cuda --batch 1 $EXPLORE_CHECK
run_step "latency, batch 64" 50 "$PY" -m cli latency resnet50 --device cuda --batch 64 $EXPLORE_CHECK
run_step "proxy throughput" 45 "$PY" "$ROOT/benchmarks/proxy_throughput.py" --device cuda --profile --images 16384 \
  --batch-size 256 --epochs 3 $BENCH_CHECK
run_step "jobs scaling" 85 "$PY" "$ROOT/benchmarks/jobs_scaling.py" --device cuda --jobs 1,4 --trials 8 --epochs 20 \
  --batch-size 64 --dataset digits $BENCH_CHECK

if [ "$DRY" = 1 ]; then
  [ "$FAILED" = 0 ] && echo "dry run: all commands parse" || echo "dry run: some commands don't parse"
else
  say ""
  say "gpu_check done in $SECONDS s; results in $RESULTS$([ "$FAILED" = 1 ] && echo ' (some steps failed: see above)')"
fi
exit "$FAILED"

#!/usr/bin/env bash
# Everything a GPU machine should run, in one command:
#
#   bash scripts/gpu_check.sh OUTDIR                 # all steps, within GPU_CHECK_BUDGET seconds
#   bash scripts/gpu_check.sh OUTDIR --dry-run       # print the steps; needs no GPU
#   bash scripts/gpu_check.sh OUTDIR --steps pytest-gpu,compile-report   # a subset
#
# Steps, in order (each with its own log OUTDIR/NN-step.log and its own timeout):
#   environment     OUTDIR/environment.json: GPU, capability, driver, torch, triton, python,
#                   nvcc, git commit (scripts/gpu_check_report.py env)
#   install         pip install --no-build-isolation --no-deps -e . with nvcc (fasttrack._C for
#                   this GPU's arch only); if that fails, a pure-Python install follows
#                   (install-python) so that the Triton steps still run
#   info            fasttrack info: the build and which backends take CUDA tensors
#   pytest-gpu      pytest -m gpu (tests/test_ops_gpu.py, the box branch GPU tests), junit xml
#   pytest-triton   the Triton / box-branch cases of the CPU suite, which use CUDA tensors when
#                   a GPU is present (test_triton_kernels, test_box_branch_kernel, test_ops,
#                   test_detrack), junit xml
#   sanitize        scripts/sanitize.sh: compute-sanitizer over every CUDA kernel
#   bench-ops       fasttrack bench --sections host,ops --full (host cost per call beside SDPA,
#                   wall vs kernel time; SD-64/96/128 vs SDPA, flash-attn, xformers, aten)
#   compile-report  python -m fasttrack.kernels.compile_report --arch <this GPU> --json ...
#                   (late: it needs no GPU and can also be run on any machine with triton)
#   lab             python scripts/gpu_lab.py --out OUTDIR/lab: the perf lab (per-op wall vs
#                   kernel time against SDPA / aten / flex / eager, a tile sweep of every Triton
#                   kernel, ncu on the top kernels; OUTDIR/lab/{ops,sweep,ncu,shared,lab}.json),
#                   within the step's time (its --budget is 90% of the step's limit); with
#                   .gpu_shared/perf/gpu_lab.py present it also runs that reviewer script
#                   (--shared-lab). scripts/apply_sweep.py OUTDIR/lab/sweep.json proposes tiles.
#   bench-rest      fasttrack bench --sections recorder,detrack,dmtrack,trackers (the default
#                   small cases; sections whose packages are missing, e.g. diffusers, become
#                   rows that say so)
# A failing step does not stop the later ones. At the end: a table (step, status, seconds, log)
# printed and written to OUTDIR/summary.md with the per-test results of the junit files.
#
# Time: the whole run ends within GPU_CHECK_BUDGET seconds (default 540: 9 minutes); each step
# gets at most its own timeout and what is left of the budget, and a step with less than 20 s
# left is skipped (and counts as failed). Exit status: 0 when every selected step passed,
# 1 otherwise, 2 for bad arguments or when there is no usable CUDA GPU (checked first, fast).
#
# The lab alone (8 minutes; a device session has 15, start included):
#   bash scripts/gpu_check.sh OUTDIR --steps environment,install,lab
# Files from outside the repository (a reviewer's perf/ instruments in a folder beside the
# checkout) reach the device machine only inside the working tree: copy them into the
# git-ignored .gpu_shared/ first (OUTSIDE: that folder),
#   mkdir -p .gpu_shared && cp -r OUTSIDE/perf .gpu_shared/
# and name it in the device call's carry list (carry: [".gpu_shared"]).
#
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET, GPU_CHECK_JOBS (pytest-xdist
# workers when xdist is installed, default 4), MAX_JOBS (nvcc build jobs, default nproc).
# TRITON_INTERPRET is unset: it would run every Triton kernel on the CPU interpreter.
set -uo pipefail

usage() {
  sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

ALL_STEPS=(environment install info pytest-gpu pytest-triton sanitize bench-ops compile-report lab bench-rest)
declare -A TIMEOUT=(
  [environment]=60 [install]=300 [install-python]=90 [info]=60 [pytest-gpu]=300
  [pytest-triton]=180 [compile-report]=150 [sanitize]=240 [bench-ops]=180 [lab]=480 [bench-rest]=150
)
MIN_STEP_S=20

OUTDIR="" DRY=0 SELECTED=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --steps) [[ $# -ge 2 ]] || usage; SELECTED="$2"; shift ;;
    --steps=*) SELECTED="${1#--steps=}" ;;
    -h | --help) usage ;;
    -*) echo "gpu_check.sh: unknown option $1" >&2; usage ;;
    *) [[ -z "$OUTDIR" ]] || usage; OUTDIR="$1" ;;
  esac
  shift
done
[[ -n "$OUTDIR" ]] || usage
if [[ -n "$SELECTED" ]]; then
  IFS=, read -r -a wanted <<<"$SELECTED"
  for s in "${wanted[@]}"; do
    [[ " ${ALL_STEPS[*]} " == *" $s "* ]] || { echo "gpu_check.sh: unknown step '$s' (${ALL_STEPS[*]})" >&2; exit 2; }
  done
else
  wanted=("${ALL_STEPS[@]}")
fi
selected() { [[ " ${wanted[*]} " == *" $1 "* ]]; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
if [[ -z "${PYTHON:-}" ]]; then
  PYTHON=python3
  command -v python3 >/dev/null 2>&1 || PYTHON=python
fi
BUDGET="${GPU_CHECK_BUDGET:-540}"
[[ "$BUDGET" =~ ^[0-9]+$ ]] || { echo "gpu_check.sh: GPU_CHECK_BUDGET must be whole seconds" >&2; exit 2; }
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1 PYTHON

mkdir -p "$OUTDIR" || exit 2
OUTDIR="$(cd "$OUTDIR" && pwd)"

# --------------------------------------------------------------------------- the GPU
ARCH=""
if [[ $DRY -eq 0 ]]; then
  ARCH="$("$PYTHON" - 2>"$OUTDIR/gpu-probe.log" <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA device (torch.version.cuda = {torch.version.cuda})")
major, minor = torch.cuda.get_device_capability()
print(f"{major}{minor}")
EOF
  )"
  if [[ -z "$ARCH" ]]; then
    echo "gpu_check.sh: no usable CUDA GPU here, nothing to check:" >&2
    sed 's/^/  /' "$OUTDIR/gpu-probe.log" >&2
    echo "(run it on a machine with an NVIDIA GPU; --dry-run lists the steps)" >&2
    exit 2
  fi
fi
ARCH_ARG="${ARCH:-<major><minor>}"

# Packages the GPU image lacks (diffusers for the tracker, recorder and patch tests: the image
# has no network) travel as wheels in .whl/ (git-ignored), fetched beforehand on a machine with
# network: pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl
# diffusers importlib_metadata. They go into a private folder put first on PYTHONPATH.
if [[ $DRY -eq 0 ]] && compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
  SITE="${TMPDIR:-/tmp}/fasttrack-gpu-check-site"
  if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "$ROOT"/.whl/*.whl >"$OUTDIR/wheels.log" 2>&1; then
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    echo "gpu_check.sh: installed $(ls "$ROOT"/.whl/*.whl | wc -l) carried wheel(s) from .whl/ into $SITE"
  else
    echo "gpu_check.sh: the wheels in .whl/ did not install (see $OUTDIR/wheels.log); going on without them" >&2
  fi
fi

# ---------------------------------------------------------------------- the commands
# pytest-xdist spreads the Triton JIT compiles (1-3 s each) over several processes sharing
# the GPU; pytest-timeout stops one hung test from eating the budget. Both are optional.
PYTEST_EXTRA=""
if [[ $DRY -eq 0 ]]; then
  "$PYTHON" -c "import xdist" >/dev/null 2>&1 && PYTEST_EXTRA+=" -n ${GPU_CHECK_JOBS:-4}"
  "$PYTHON" -c "import pytest_timeout" >/dev/null 2>&1 && PYTEST_EXTRA+=" --timeout 150"
fi
JOBS="${MAX_JOBS:-$(nproc 2>/dev/null || echo 4)}"
SHARED_LAB=".gpu_shared/perf/gpu_lab.py"  # the reviewer's lab, carried in (see the header)
LAB_SHARED=""
[[ -f "$ROOT/$SHARED_LAB" ]] && LAB_SHARED=" --shared-lab $SHARED_LAB"
declare -A CMD=(
  [environment]="\"\$PYTHON\" scripts/gpu_check_report.py env \"$OUTDIR/environment.json\""
  [install]="FASTTRACK_BUILD_CUDA=1 FASTTRACK_CUDA_ARCHS=$ARCH_ARG MAX_JOBS=$JOBS \"\$PYTHON\" -m pip install --no-build-isolation --no-deps -v -e ."
  [install-python]="FASTTRACK_BUILD_CUDA=0 \"\$PYTHON\" -m pip install --no-build-isolation --no-deps -e ."
  [info]="\"\$PYTHON\" -m fasttrack.cli info"
  [pytest-gpu]="\"\$PYTHON\" -m pytest -m gpu -q -rfEs$PYTEST_EXTRA --junitxml \"$OUTDIR/pytest-gpu.xml\" tests"
  [pytest-triton]="\"\$PYTHON\" -m pytest -m 'not gpu' -q -rfEs$PYTEST_EXTRA --junitxml \"$OUTDIR/pytest-triton.xml\" -k 'triton or box_branch' tests/test_triton_kernels.py tests/test_box_branch_kernel.py tests/test_ops.py tests/test_detrack.py"
  [compile-report]="\"\$PYTHON\" -m fasttrack.kernels.compile_report --arch $ARCH_ARG --json \"$OUTDIR/compile_report.json\""
  [sanitize]="bash scripts/sanitize.sh"
  [bench-ops]="\"\$PYTHON\" -m fasttrack.cli bench --sections host,ops --full --out \"$OUTDIR/bench-ops\""
  [lab]="\"\$PYTHON\" scripts/gpu_lab.py --out \"$OUTDIR/lab\" --budget \$((GPU_CHECK_STEP_LIMIT * 9 / 10))$LAB_SHARED"
  [bench-rest]="\"\$PYTHON\" -m fasttrack.cli bench --sections recorder,detrack,dmtrack,trackers --out \"$OUTDIR/bench-rest\""
)

if [[ $DRY -eq 1 ]]; then
  echo "gpu_check.sh --dry-run: in $ROOT, PYTHON=$PYTHON, budget ${BUDGET} s, output $OUTDIR"
  echo "(the GPU probe, pytest-xdist and pytest-timeout detection are skipped in a dry run)"
  n=0
  for s in "${ALL_STEPS[@]}"; do
    n=$((n + 1))
    if selected "$s"; then
      printf '%02d %-15s timeout %4ss  %s\n' "$n" "$s" "${TIMEOUT[$s]}" "${CMD[$s]}"
      [[ "$s" == install ]] && printf '   %-15s timeout %4ss  %s   (only if install fails)\n' \
        install-python "${TIMEOUT[install-python]}" "${CMD[install-python]}"
    else
      printf '%02d %-15s (not selected)\n' "$n" "$s"
    fi
  done
  exit 0
fi

# -------------------------------------------------------------------------- running
START=$(date +%s)
STEPS_TSV="$OUTDIR/steps.tsv"
printf 'step\tstatus\tseconds\tlog\n' >"$STEPS_TSV"
FAILED=0
N=0

run_step() {  # run_step NAME: runs CMD[NAME] under its timeout; records its status
  local name="$1" log rc t0 t1 left limit status
  N=$((N + 1))
  log="$OUTDIR/$(printf '%02d' "$N")-$name.log"
  left=$((BUDGET - ($(date +%s) - START)))
  limit=${TIMEOUT[$name]}
  ((left < limit)) && limit=$left
  if ((limit < MIN_STEP_S)); then
    status="skipped (time budget)"
    echo "=== $name: $status"
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" 0 "-" >>"$STEPS_TSV"
    FAILED=1
    return 1
  fi
  echo "=== $name (timeout ${limit} s): ${CMD[$name]}"
  t0=$(date +%s)
  {
    echo "\$ ${CMD[$name]}"
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ), timeout ${limit} s"
  } >"$log"
  export GPU_CHECK_STEP_LIMIT=$limit  # a step may size its own budget by it (lab)
  timeout --kill-after=10 "$limit" bash -c "${CMD[$name]}" >>"$log" 2>&1 </dev/null
  rc=$?
  t1=$(date +%s)
  case $rc in
    0) status="ok" ;;
    124 | 137) status="TIMEOUT (${limit} s)" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  echo "# exit status $rc: $status" >>"$log"
  [[ $rc -ne 0 ]] && FAILED=1 && tail -n 15 "$log" | sed 's/^/    /'
  echo "    -> $status, $((t1 - t0)) s, log $log"
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((t1 - t0))" "$log" >>"$STEPS_TSV"
  return $rc
}

echo "gpu_check.sh: sm_$ARCH, PYTHON=$PYTHON ($("$PYTHON" -c 'import sys; print(sys.version.split()[0])')), budget ${BUDGET} s, output $OUTDIR"
for s in "${ALL_STEPS[@]}"; do
  selected "$s" || continue
  if [[ "$s" == install ]]; then
    # Without the CUDA extension the Triton kernels and their tests still run: fall back to a
    # pure-Python editable install (the failed install still counts as failed).
    run_step install || run_step install-python
  else
    run_step "$s"
  fi
done

"$PYTHON" scripts/gpu_check_report.py summary "$OUTDIR" --budget "$BUDGET" --elapsed "$(($(date +%s) - START))" \
  || { echo "gpu_check.sh: could not write $OUTDIR/summary.md" >&2; FAILED=1; }
exit $FAILED

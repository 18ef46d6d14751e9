#!/usr/bin/env bash
# Runs compute-sanitizer's four tools (memcheck, racecheck, initcheck, synccheck) over
# scripts/sanitize_driver.py, which calls every CUDA forward of fasttrack._C at odd sizes and
# checks the results against float64 references. Needs a GPU and the built extension
# (pip install -e . with nvcc). Exits non-zero if any tool reports an error or the driver fails.
#
#   bash scripts/sanitize.sh                 # all four tools
#   bash scripts/sanitize.sh racecheck       # a subset
#   COMPUTE_SANITIZER=/path/to/compute-sanitizer PYTHON=python3 bash scripts/sanitize.sh
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python}"
SAN="${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || true)}"
if [[ -z "$SAN" ]]; then
  for cand in "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer; do
    [[ -x "$cand" ]] && SAN="$cand" && break
  done
fi
if [[ -z "$SAN" || ! -x "$SAN" ]]; then
  echo "sanitize.sh: compute-sanitizer not found (set COMPUTE_SANITIZER or CUDA_HOME)" >&2
  exit 2
fi
if ! "$PYTHON" -c "import sys; from fasttrack import _ext; sys.exit(0 if _ext.HAS_CUDA_EXT else (print('sanitize.sh: fasttrack._C unusable:', _ext.CUDA_EXT_ERROR, file=sys.stderr) or 1))"; then
  exit 2
fi

# Every tensor gets its own cudaMalloc, so memcheck sees an access past a tensor's end instead
# of landing silently in a neighbour inside torch's caching-allocator block.
export PYTORCH_NO_CUDA_MEMORY_CACHING=1

# Check only fasttrack's kernels when this compute-sanitizer can filter by name (the driver
# makes its inputs on the CPU, so no unchecked kernel writes memory they read).
filter=()
if "$SAN" --help 2>&1 | grep -q -- "--kernel-name "; then
  filter=(--kernel-name kns=fasttrack)
fi

tools=("$@")
[[ ${#tools[@]} -eq 0 ]] && tools=(memcheck racecheck initcheck synccheck)

failed=()
for tool in "${tools[@]}"; do
  case "$tool" in
    memcheck) extra=() ;;
    racecheck) extra=(--racecheck-report all) ;;
    initcheck | synccheck) extra=() ;;
    *) echo "sanitize.sh: unknown tool '$tool' (memcheck, racecheck, initcheck, synccheck)" >&2; exit 2 ;;
  esac
  echo "=== compute-sanitizer --tool $tool"
  if ! "$SAN" --tool "$tool" --error-exitcode 99 --print-limit 50 "${filter[@]}" "${extra[@]}" \
       "$PYTHON" scripts/sanitize_driver.py; then
    failed+=("$tool")
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "sanitize.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "sanitize.sh: ${tools[*]}: no errors"

#!/usr/bin/env bash
# GPU check for a fresh machine with one NVIDIA GPU (torch, transformers, accelerate preinstalled).
#
#   bash bench/gpu_check.sh OUTDIR [--wheels DIR] [--no-install] [--budget SECONDS] [--steps a,b]
#
# 1. Installs what simpo-cli and the checks need and the machine lacks (hydra-core, omegaconf,
#    datasets, trl, liger-kernel, deepspeed, ...): from --wheels DIR (`make gpu-wheels` fills .whl/)
#    with `pip --no-index`, else from PyPI when it is reachable, into a private target directory
#    ($SIMPO_GPU_SITE, default /tmp/simpo-gpu-site) put first on PYTHONPATH; nothing installed is
#    upgraded. --no-install skips this (the packages are already there).
# 2. Runs `python -m bench.gpu_check OUTDIR` (bench/gpu_check.py): the bf16 benchmark table, padding-free
#    vs padded, ZeRO-3 and FSDP smokes, vllm generation, QLoRA; each step time-boxed, skipped with
#    a reason when its package or the GPU is missing. Results: OUTDIR/gpu_check.json.
# Exit status: 0 all steps ok or skipped, 1 a step failed, 2 bad arguments.
set -u -o pipefail

usage() { echo "usage: bash bench/gpu_check.sh OUTDIR [--wheels DIR] [--no-install] [--budget SECONDS] [--steps a,b]" >&2; exit 2; }

OUTDIR="" WHEELS="" INSTALL=1 BUDGET="" STEPS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) [ $# -ge 2 ] || usage; WHEELS="$2"; shift 2 ;;
    --wheels=*) WHEELS="${1#--wheels=}"; shift ;;
    --no-install) INSTALL=0; shift ;;
    --budget) [ $# -ge 2 ] || usage; BUDGET="$2"; shift 2 ;;
    --steps) [ $# -ge 2 ] || usage; STEPS="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $1" >&2; usage ;;
    *) [ -z "$OUTDIR" ] || { echo "gpu_check.sh: one OUTDIR only (got '$OUTDIR' and '$1')" >&2; usage; }
       OUTDIR="$1"; shift ;;
  esac
done
[ -n "$OUTDIR" ] || { echo "gpu_check.sh: OUTDIR is required" >&2; usage; }
case "${BUDGET:-0}" in *[!0-9]*) echo "gpu_check.sh: --budget takes whole seconds, got '$BUDGET'" >&2; usage ;; esac
if [ -n "$WHEELS" ] && [ ! -d "$WHEELS" ]; then
  echo "gpu_check.sh: --wheels $WHEELS: no such directory (make gpu-wheels fills .whl/)" >&2; exit 2
fi

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
SITE="${SIMPO_GPU_SITE:-/tmp/simpo-gpu-site}"
mkdir -p "$OUTDIR" || exit 2
OUTDIR="$(cd "$OUTDIR" && pwd)"
START=$(date +%s)

# Packages whose import name differs from the distribution name: dist=module.
NEEDED="hydra-core=hydra omegaconf=omegaconf antlr4-python3-runtime=antlr4 datasets=datasets dill=dill
multiprocess=multiprocess trl=trl liger-kernel=liger_kernel"
missing() {  # the distributions of NEEDED whose module is not found
  "$PY" - $NEEDED <<'EOF'
import importlib.util, sys
print(" ".join(p.split("=")[0] for p in sys.argv[1:] if importlib.util.find_spec(p.split("=")[1]) is None))
EOF
}

if [ "$INSTALL" = 1 ]; then
  mkdir -p "$SITE"
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  # --upgrade: a rerun on the same machine replaces what the last run put in $SITE.
  PIP=("$PY" -m pip install -q --disable-pip-version-check --no-compile --no-cache-dir --upgrade --target "$SITE")
  if [ -n "$WHEELS" ]; then
    echo "== installing from $WHEELS (no index)"
    shopt -s nullglob
    whls=("$WHEELS"/*.whl) sdists=("$WHEELS"/*.tar.gz)
    [ ${#whls[@]} -gt 0 ] || echo "gpu_check.sh: no .whl files in $WHEELS" >&2
    # --no-deps: each wheel is named in the directory; what the machine already has stays as it is.
    [ ${#whls[@]} -eq 0 ] || timeout 180 "${PIP[@]}" --no-index --no-deps "${whls[@]}" \
      || echo "gpu_check.sh: installing the wheels failed; steps needing them fail or skip" >&2
    # sdists (deepspeed): built here against the installed torch, with no ops prebuilt (JIT at use).
    for sd in "${sdists[@]}"; do
      DS_BUILD_OPS=0 timeout 240 "${PIP[@]}" --no-index --no-deps --no-build-isolation "$sd" \
        || echo "gpu_check.sh: building $(basename "$sd") failed; its step is skipped" >&2
    done
  else
    need="$(missing)"
    if [ -n "$need" ]; then
      echo "== installing from PyPI: $need deepspeed"
      # shellcheck disable=SC2086
      timeout 240 "${PIP[@]}" --retries 1 --timeout 15 $need deepspeed \
        || echo "gpu_check.sh: pip install from PyPI failed or timed out (no internet?); steps needing them fail or skip" >&2
    fi
  fi
  echo "== install took $(( $(date +%s) - START )) s"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
still="$(missing)"
[ -z "$still" ] || echo "gpu_check.sh: still missing after install: $still" >&2

cd "$REPO" || exit 2
# 8 minutes in all: the steps get what the install left of 470 s (at least 60 s) unless --budget.
[ -n "$BUDGET" ] || { BUDGET=$(( 470 - ($(date +%s) - START) )); [ "$BUDGET" -ge 60 ] || BUDGET=60; }
args=("$OUTDIR" --budget "$BUDGET")
[ -z "$STEPS" ] || args+=(--steps "$STEPS")
"$PY" -m bench.gpu_check "${args[@]}"
rc=$?
echo "== gpu check took $(( $(date +%s) - START )) s in all; results in $OUTDIR/gpu_check.json"
exit $rc

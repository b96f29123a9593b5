#!/usr/bin/env bash
# The GPU harness in one command: ltr_jax against PyTorch on one GPU (the training step, ViT-B/16 features and LIFT's
# AdaptFormer step, the stage-1 loop on JPEGs, stage 2 at iNaturalist scale), every figure into
# benchmarks/results/gpu_<gpu>.json, with a copy of it and gpu_log.txt (every process's output) in the output folder.
# It installs the carried wheels, runs a smoke test, then `python -m benchmarks.gpu all`; what each part measures:
# benchmarks/gpu/<part>.py's docstring.
#
# A GPU node without network: first, on a machine with PyPI, `bash benchmarks/gpu/wheels.sh` fills the git-ignored
# benchmarks/gpu_wheels/ (the wheels the node lacks, fallback flax/optax/orbax wheels, Fashion-MNIST); carry that
# folder with the working tree to the node and run there
#   bash benchmarks/gpu/run.sh --total 555
# With a time limit per command, give --total a little under it: the script ends itself by then and rewrites its
# JSON after every part and every timed configuration, so a run stopped early still leaves what it had. The output
# folder holds what to take back: gpu_<gpu>.json (into benchmarks/results/) and gpu_log.txt; the summary table ends
# the output. What did not fit is listed as skipped in the JSON; a second run can add some of it, e.g.
#   bash benchmarks/gpu/run.sh --total 150 --parts step --step-jobs jax:resnet50:float32:128,torch:resnet50:float32:128 --json benchmarks/results/gpu_h200_2.json
#
# On a CPU, in the project's activated venv, the whole run at tiny sizes in a few minutes, installing nothing:
#   bash benchmarks/gpu/run.sh --tiny --no-install
#
# The test suite is no part of this run. On the node, after the carried wheels are installed:
#   bash benchmarks/gpu/run.sh --install-only && PYTHONPATH=/tmp/ltr_gpu_site:$PWD python3 -m pytest -q
#
# Options (the rest go to `python -m benchmarks.gpu all`, see its --help):
#   --tiny          CPU sizes
#   --no-install    use the current python's packages as they are (no wheels, no Fashion-MNIST copy)
#   --install-only  install the carried wheels (into /tmp/ltr_gpu_site) and run the smoke test, then stop
#   --total S       seconds from the start of this script by which everything has ended (default 555; tiny 900)
#   --out DIR       output folder (default $OUT, else /tmp/ltr_gpu_out)
# Environment: PYTHON (default python3).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
START=$(date +%s)
PY="${PYTHON:-python3}"
TINY=0
INSTALL=1
INSTALL_ONLY=0
TOTAL=""
OUTDIR="${OUT:-/tmp/ltr_gpu_out}"
PASS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) TINY=1; PASS+=("--tiny"); shift ;;
    --no-install) INSTALL=0; shift ;;
    --install-only) INSTALL_ONLY=1; shift ;;
    --total) TOTAL="$2"; shift 2 ;;
    --out) OUTDIR="$2"; shift 2 ;;
    *) PASS+=("$1"); shift ;;
  esac
done
[ -n "$TOTAL" ] || { [ $TINY = 1 ] && TOTAL=900 || TOTAL=555; }

mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
LOG="$OUTDIR/gpu_log.txt"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!

export PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-/tmp/ltr_gpu_xla_cache}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"
SCRATCH="$(mktemp -d /tmp/ltr_gpu_sh.XXXXXX)"
SETUP_JSON="$SCRATCH/setup.json"
SMOKE="$SCRATCH/smoke.txt"
elapsed() { echo $(( $(date +%s) - START )); }
say() { echo "[run.sh $(date +%H:%M:%S) +$(elapsed)s] $*"; }

say "python: $(command -v "$PY") ($("$PY" -c 'import sys; print(sys.version.split()[0])' 2>&1)); $(nproc) cores; $(uname -m)"
command -v nvidia-smi >/dev/null && nvidia-smi -L

WHEELS="$ROOT/benchmarks/gpu_wheels"
SITE=/tmp/ltr_gpu_site
INSTALL_NOTE="not installed (--no-install)"
FALLBACK_USED=false
install_dir() {  # wheels of folder $1 into $SITE (no dependencies resolved: the list is complete)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$1"/*.whl
}
if [ $INSTALL = 1 ]; then
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    say "ERROR: no wheels in $WHEELS: run 'bash benchmarks/gpu/wheels.sh' where there is PyPI and carry" \
        "benchmarks/gpu_wheels with the working tree (or pass --no-install)"
    exit 3
  fi
  want="$(cat "$WHEELS/PYTHON_VERSION" 2>/dev/null)"
  have="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [ "$want" != "$have" ]; then
    say "ERROR: the carried wheels are for Python $want but $PY is Python $have: rerun" \
        "'bash benchmarks/gpu/wheels.sh --python-version $have' where there is PyPI, then this"
    exit 3
  fi
  t0=$(date +%s)
  if ! install_dir "$WHEELS"; then
    say "ERROR: pip install of the carried wheels failed"
    exit 4
  fi
  INSTALL_NOTE="$(ls "$WHEELS"/*.whl | wc -l) wheels into $SITE in $(( $(date +%s) - t0 )) s"
  say "installed $INSTALL_NOTE"
  export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  # The test suite reads Fashion-MNIST from Debian's folder (ltr_jax.data.sources.FASHION_MNIST_DIR).
  FM=/usr/share/datasets/fashion-mnist
  if [ ! -f "$FM/train-images-idx3-ubyte.gz" ] && [ -d "$WHEELS/data/fashion-mnist" ]; then
    mkdir -p "$FM" && cp "$WHEELS"/data/fashion-mnist/*.gz "$FM/" && say "Fashion-MNIST copied to $FM" \
      || say "WARNING: could not copy Fashion-MNIST to $FM (the tests that read it will fail)"
  fi
else
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi

# Smoke: imports and 2 jitted steps. If ltr_jax fails with the node's flax / optax / orbax, the project's versions.
t0=$(date +%s)
SMOKE_RC=0
timeout 120 "$PY" -m benchmarks.gpu smoke > "$SMOKE" 2>&1 || SMOKE_RC=$?
if [ $SMOKE_RC != 0 ] && [ $INSTALL = 1 ] && ls "$WHEELS"/fallback/*.whl >/dev/null 2>&1 \
   && grep -qE "flax|optax|orbax" "$SMOKE"; then
  say "smoke test failed (rc $SMOKE_RC) with the node's packages:"; tail -n 15 "$SMOKE"
  say "installing the fallback $(ls "$WHEELS"/fallback | tr '\n' ' ')"
  install_dir "$WHEELS/fallback" && FALLBACK_USED=true
  SMOKE_RC=0
  timeout 120 "$PY" -m benchmarks.gpu smoke > "$SMOKE" 2>&1 || SMOKE_RC=$?
fi
tail -n 20 "$SMOKE"
say "smoke rc $SMOKE_RC in $(( $(date +%s) - t0 )) s"

if [ $INSTALL_ONLY = 1 ]; then
  say "ready for the test suite: PYTHONPATH=$PYTHONPATH $PY -m pytest -q"
  RC=$SMOKE_RC
else
  "$PY" - "$SETUP_JSON" "$INSTALL_NOTE" "$FALLBACK_USED" "$SMOKE_RC" "$SMOKE" "$(elapsed)" <<'EOF'
import json, sys
path, note, fallback, rc, smoke, seconds = sys.argv[1:]
json.dump({"install": note, "fallback_flax_optax_orbax": fallback == "true", "smoke_rc": int(rc),
           "smoke_output_tail": open(smoke, errors="replace").read()[-2000:], "setup_seconds": int(seconds)},
          open(path, "w"), indent=2)
EOF
  BUDGET=$(( TOTAL - $(elapsed) - 10 ))
  say "parts: $BUDGET s"
  "$PY" -m benchmarks.gpu all --budget "$BUDGET" --out "$OUTDIR" --setup-json "$SETUP_JSON" "${PASS[@]}"
  RC=$?
fi
rm -rf "$SCRATCH"
say "done (rc $RC) after $(elapsed) s"
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null
exit $RC

#!/usr/bin/env bash
# The one prepared GPU run: ltr_jax against PyTorch on one GPU (training step, end-to-end stage 1 on
# JPEGs with grain workers, stage 2 at iNaturalist scale, the quickstart and the test suite), every figure into
# benchmarks/results/gpu_<gpu>.json, mirrored to $OUT (with gpu_log.txt, pytest_log.txt, quickstart_results.md).
# What each part measures and how: benchmarks/gpu.py's docstring.
#
# BEFORE, here (a machine with PyPI), once: bash benchmarks/gpu_wheels.sh
#   fills the git-ignored benchmarks/gpu_wheels/ (~57 MiB with the working tree; the tool carries 64 MiB): the
#   wheels the device image lacks (grain, ml-collections, tensorflow-datasets + deps, simplejpeg, tensorboardX,
#   the notebook test stack), fallback flax/optax/orbax wheels, and the Fashion-MNIST IDX files.
#
# THEN, the device call (one call; timeout_s 600; the script ends itself by ~555 s and writes its JSON after every
# part and every timed configuration, so a call stopped early still returns what it had):
#   run(command="bash benchmarks/gpu.sh", carry=["benchmarks/gpu_wheels"], timeout_s=600, kind="nvidia-h200")
# (kind may be left out: an H100 gives figures of the same kind; the JSON names the card.) The files come back under
# the reply's files_at: gpu_<gpu>.json (copy it into benchmarks/results/), gpu_log.txt (every process's output),
# pytest_log.txt, quickstart_results.md. The reply's output_tail ends with a summary table.
# Device time: the machine's start (1-2 min) + this call (~9.5 min) leaves ~3 min of the 15. What did not fit (the
# slower step configurations, a torch.compile, the end of the test suite) is listed as skipped in the JSON; a
# second call within 30 s of the first (the machine still warm: installed wheels and the XLA cache in /tmp kept)
# can add some of it, e.g.
#   run(command="bash benchmarks/gpu.sh --total 150 --parts step --step-jobs jax:resnet50:float32:128,torch:resnet50:float32:128 --json benchmarks/results/gpu_h200_2.json",
#       carry=["benchmarks/gpu_wheels"], timeout_s=180)
#   (or --parts tests --tests "tests/test_a.py tests/test_b.py": the test files the first call did not reach)
#
# On a CPU (this repo's machines, in the project's activated venv), the whole run at tiny sizes in a few minutes,
# without installing anything:
#   bash benchmarks/gpu.sh --tiny --no-install
#
# Options (the rest go to `python benchmarks/gpu.py all`, see its --help):
#   --tiny          CPU sizes
#   --no-install    use the current python's packages as they are (no wheels, no Fashion-MNIST copy)
#   --total S       seconds from the start of this script by which everything has ended (default 555; tiny 900)
# Environment: PYTHON (default python3: on the device /opt/torch/.venv/bin/python3, Python 3.12).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$(date +%s)
PY="${PYTHON:-python3}"
TINY=0
INSTALL=1
TOTAL=""
PASS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) TINY=1; PASS+=("--tiny"); shift ;;
    --no-install) INSTALL=0; shift ;;
    --total) TOTAL="$2"; shift 2 ;;
    *) PASS+=("$1"); shift ;;
  esac
done
[ -n "$TOTAL" ] || { [ $TINY = 1 ] && TOTAL=900 || TOTAL=555; }

OUTDIR="${OUT:-/tmp/ltr_gpu_out}"
mkdir -p "$OUTDIR"
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
say() { echo "[gpu.sh $(date +%H:%M:%S) +$(elapsed)s] $*"; }

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
    say "ERROR: no wheels in $WHEELS: run 'bash benchmarks/gpu_wheels.sh' where there is PyPI, and name" \
        "benchmarks/gpu_wheels in the run's carry (or pass --no-install)"
    exit 3
  fi
  want="$(cat "$WHEELS/PYTHON_VERSION" 2>/dev/null)"
  have="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [ "$want" != "$have" ]; then
    say "ERROR: the carried wheels are for Python $want but $PY is Python $have: rerun" \
        "'bash benchmarks/gpu_wheels.sh --python-version $have' here, then the run"
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
  # The quickstart and the tests read Fashion-MNIST from Debian's folder (ltr_jax.data.sources.FASHION_MNIST_DIR).
  FM=/usr/share/datasets/fashion-mnist
  if [ ! -f "$FM/train-images-idx3-ubyte.gz" ] && [ -d "$WHEELS/data/fashion-mnist" ]; then
    mkdir -p "$FM" && cp "$WHEELS"/data/fashion-mnist/*.gz "$FM/" && say "Fashion-MNIST copied to $FM" \
      || say "WARNING: could not copy Fashion-MNIST to $FM (the tests that read it will fail)"
  fi
else
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi

# Smoke: imports and 2 jitted steps. If ltr_jax fails with the image's flax / optax / orbax, the project's versions.
t0=$(date +%s)
SMOKE_RC=0
timeout 120 "$PY" benchmarks/gpu.py smoke > "$SMOKE" 2>&1 || SMOKE_RC=$?
if [ $SMOKE_RC != 0 ] && [ $INSTALL = 1 ] && ls "$WHEELS"/fallback/*.whl >/dev/null 2>&1 \
   && grep -qE "flax|optax|orbax" "$SMOKE"; then
  say "smoke test failed (rc $SMOKE_RC) with the image's packages:"; tail -n 15 "$SMOKE"
  say "installing the fallback $(ls "$WHEELS"/fallback | tr '\n' ' ')"
  install_dir "$WHEELS/fallback" && FALLBACK_USED=true
  SMOKE_RC=0
  timeout 120 "$PY" benchmarks/gpu.py smoke > "$SMOKE" 2>&1 || SMOKE_RC=$?
fi
cat "$SMOKE" | tail -n 20
say "smoke rc $SMOKE_RC in $(( $(date +%s) - t0 )) s"

"$PY" - "$SETUP_JSON" "$INSTALL_NOTE" "$FALLBACK_USED" "$SMOKE_RC" "$SMOKE" "$(elapsed)" <<'EOF'
import json, sys
path, note, fallback, rc, smoke, seconds = sys.argv[1:]
json.dump({"install": note, "fallback_flax_optax_orbax": fallback == "true", "smoke_rc": int(rc),
           "smoke_output_tail": open(smoke, errors="replace").read()[-2000:], "setup_seconds": int(seconds)},
          open(path, "w"), indent=2)
EOF

BUDGET=$(( TOTAL - $(elapsed) - 10 ))
say "parts: $BUDGET s"
"$PY" benchmarks/gpu.py all --budget "$BUDGET" --log "$LOG" --setup-json "$SETUP_JSON" "${PASS[@]}"
RC=$?
rm -rf "$SCRATCH"
say "done (rc $RC) after $(elapsed) s"
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null
exit $RC

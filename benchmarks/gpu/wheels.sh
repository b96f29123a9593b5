#!/usr/bin/env bash
# Run where there is PyPI, before benchmarks/gpu/run.sh runs on a GPU node without network: fills the git-ignored
# benchmarks/gpu_wheels/, which travels with the working tree to the node, with what the node lacks:
#   benchmarks/gpu_wheels/*.whl           the packages ltr_jax, its test suite and the harness need beyond what a CUDA
#                                         image with JAX and PyTorch already has (left out: see the list below),
#                                         pinned to the versions of the project's venv (pip freeze, 2026-12), for
#                                         CPython --python-version on manylinux x86-64;
#   benchmarks/gpu_wheels/fallback/*.whl  flax, optax and orbax-checkpoint at the project's versions, installed by
#                                         run.sh only if ltr_jax fails its smoke test with the node's own;
#   benchmarks/gpu_wheels/data/fashion-mnist/  the four Fashion-MNIST IDX files (the test suite reads them from
#                                         /usr/share/datasets/fashion-mnist, where run.sh copies them);
#   benchmarks/gpu_wheels/PYTHON_VERSION  the X.Y the wheels are for (run.sh refuses another python).
# Usage: bash benchmarks/gpu/wheels.sh [--python-version 3.12] [--max-mib 60]
#   --python-version  the node's python (default 3.12)
#   --max-mib         fail if the folder plus the working tree pass this many MiB (what may travel with the tree)
set -euo pipefail

PYVER=3.12
MAX_MIB=60
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) PYVER="$2"; shift 2 ;;
    --max-mib) MAX_MIB="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$ROOT/benchmarks/gpu_wheels"
PIP="${PIP:-python3 -m pip}"
[ -x "$ROOT/.venv/bin/python" ] && PIP="$ROOT/.venv/bin/python -m pip"

# name==version, as `pip freeze` of the project's venv prints them (2026-12). Missing on the node:
WHEELS=(
  # ltr_jax's own dependencies (pyproject.toml) and theirs
  grain==0.2.18 array_record==0.8.6 portpicker==1.6.0
  ml_collections==1.1.0
  tensorflow-datasets==4.9.10 tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0 dm-tree==0.1.10
  immutabledict==4.3.1 promise==2.3 simple-parsing==0.1.9 docstring_parser==0.18.0 termcolor==3.3.0 toml==0.10.2
  importlib_resources==7.1.0 tensorboardX==2.6.5
  simplejpeg==1.9.0  # the `fast` extra: libjpeg-turbo decoding (the end-to-end run decodes 500x375 JPEGs)
  timm==1.0.31  # part vit's PyTorch side (benchmarks/vit.py); of its dependencies it needs torch, torchvision, pyyaml
  # the `test` extra (tests/test_colabs.py runs the notebooks through a kernel) and theirs
  nbclient==0.11.0 nbformat==5.11.1 ipykernel==7.4.0 ipython==9.18.1 ipython_pygments_lexers==1.1.1 jedi==0.20.1
  parso==0.8.7 matplotlib-inline==0.2.2 pexpect==4.9.0 ptyprocess==0.7.0 prompt_toolkit==3.0.53 wcwidth==0.9.4
  stack-data==0.6.3 asttokens==3.0.2 executing==2.3.0 pure_eval==0.2.4 traitlets==5.16.1 comm==0.2.3
  debugpy==1.8.22 jupyter_client==8.10.0 jupyter_core==5.9.1 platformdirs==4.14.9 pyzmq==27.3.0 tornado==6.6.1
  nest-asyncio2==1.7.4 fastjsonschema==2.22.3 jsonschema==4.26.0 jsonschema-specifications==2025.9.1
  referencing==0.37.0 rpds-py==2026.9.1
)
# Installed on the node only if ltr_jax fails its smoke test with the node's own versions.
FALLBACK=(flax==0.12.8 optax==0.2.8 orbax-checkpoint==0.12.8)
# Source-only releases: built here into a pure-Python wheel (checked to be py3-none-any).
SDIST_ONLY=(promise)
# Left out on purpose (already in a CUDA image with JAX and PyTorch): jax, jaxlib, the CUDA plugin, flax, optax,
# orbax-checkpoint, chex, numpy, scipy, pillow, absl-py, etils, protobuf, psutil, pyarrow, requests, tqdm, wrapt,
# matplotlib, tensorstore, treescope, msgpack, pyyaml, einops, attrs, cloudpickle, pytest, pytest-timeout,
# pytest-xdist, python-dateutil, torch, torchvision, triton. Also tzdata (python-dateutil 4's; the image brings its
# own).

PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
           --platform manylinux_2_5_x86_64 --platform linux_x86_64)

# Pins against the venv (a warning: the pins above are what was tested here).
if [ -x "$ROOT/.venv/bin/python" ]; then
  FROZEN="$("$ROOT/.venv/bin/python" -m pip freeze 2>/dev/null | tr 'A-Z_' 'a-z-')"
  for spec in "${WHEELS[@]}" "${FALLBACK[@]}"; do
    want="$(echo "$spec" | tr 'A-Z_' 'a-z-')"
    grep -qx -- "$want" <<< "$FROZEN" || echo "warning: $spec is not what the venv has ($(grep -- "^${want%%==*}==" <<< "$FROZEN" || echo 'absent'))" >&2
  done
fi

rm -rf "$DEST"
mkdir -p "$DEST/fallback" "$DEST/data/fashion-mnist"
cd "$DEST"

binary=()
for spec in "${WHEELS[@]}"; do
  skip=0
  for s in "${SDIST_ONLY[@]}"; do [ "${spec%%==*}" = "$s" ] && skip=1; done
  [ $skip = 1 ] || binary+=("$spec")
done
$PIP download --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp "${PLATFORMS[@]}" \
  -d "$DEST" "${binary[@]}"
for s in "${SDIST_ONLY[@]}"; do
  for spec in "${WHEELS[@]}"; do
    if [ "${spec%%==*}" = "$s" ]; then
      $PIP wheel --no-deps --no-binary "$s" -w "$DEST" "$spec"
    fi
  done
done
for w in "$DEST"/promise-*.whl; do
  case "$w" in *-py3-none-any.whl|*-py2.py3-none-any.whl) ;; *) echo "error: $w is not pure Python" >&2; exit 1 ;; esac
done
$PIP download --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp "${PLATFORMS[@]}" \
  -d "$DEST/fallback" "${FALLBACK[@]}"

# One version of each: two would stop the whole install there.
dups="$(ls "$DEST"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z_' 'a-z-' | sort | uniq -d)"
[ -z "$dups" ] || { echo "error: several wheels of $dups" >&2; exit 1; }
n="$(ls "$DEST"/*.whl | wc -l)"
[ "$n" = "${#WHEELS[@]}" ] || { echo "error: $n wheels for ${#WHEELS[@]} packages" >&2; exit 1; }

FMNIST="${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  cp "$FMNIST/$f" "$DEST/data/fashion-mnist/" || { echo "error: no $FMNIST/$f (apt-get install dataset-fashion-mnist)" >&2; exit 1; }
done

echo "$PYVER" > "$DEST/PYTHON_VERSION"
printf '%s\n' "${WHEELS[@]}" > "$DEST/MANIFEST.txt"

tree_bytes="$(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')"
folder_bytes="$(du -sb "$DEST" | cut -f1)"
echo
echo "wheels: $n (+ $(ls "$DEST"/fallback/*.whl | wc -l) fallback) for CPython $PYVER"
du -sh "$DEST"/*.whl | sort -h | tail -5
printf 'wheels %.1f MiB, fallback %.1f MiB, Fashion-MNIST %.1f MiB; benchmarks/gpu_wheels %.1f MiB + working tree %.1f MiB = %.1f MiB (limit %s)\n' \
  "$(du -cb "$DEST"/*.whl | tail -1 | cut -f1 | awk '{print $1/1048576}')" \
  "$(du -sb "$DEST/fallback" | cut -f1 | awk '{print $1/1048576}')" \
  "$(du -sb "$DEST/data" | cut -f1 | awk '{print $1/1048576}')" \
  "$(echo "$folder_bytes" | awk '{print $1/1048576}')" "$(echo "$tree_bytes" | awk '{print $1/1048576}')" \
  "$(echo "$folder_bytes $tree_bytes" | awk '{print ($1+$2)/1048576}')" "$MAX_MIB"
if [ "$((folder_bytes + tree_bytes))" -gt $((MAX_MIB * 1048576)) ]; then
  echo "error: over $MAX_MIB MiB (--max-mib)" >&2
  exit 1
fi

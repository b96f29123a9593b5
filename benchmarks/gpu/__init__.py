"""The GPU harness: ltr_jax against PyTorch on one GPU, every figure into one JSON.

`bash benchmarks/gpu/run.sh` installs what the node lacks and runs `python -m benchmarks.gpu all`; `--tiny` runs the
same code at CPU sizes. The parts, one module each: `info` (machine, versions, devices), `step` (the training step),
`vit_b16` (part vit: benchmarks/vit.py on the GPU, ViT-B/16 features and LIFT's AdaptFormer step), `e2e` (the whole
stage-1 loop on JPEGs), `stage2` (benchmarks/decouple.py on the GPU); `harness` is what they share.
"""
import os
import sys

BENCHMARKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(BENCHMARKS)
# The sibling benchmarks (train_step, pipeline, torch_models, common) import each other as top-level modules.
for _path in (BENCHMARKS, ROOT):
  if _path not in sys.path:
    sys.path.insert(0, _path)

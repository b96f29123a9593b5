"""Where the JAX training step spends its time on CPU: XLA:CPU's convolutions, one layer and a whole ResNet-32.

python benchmarks/conv_grad.py [--json PATH] [--channels 16] [--size 32] [--batch 128] [--threads 2]
One 3x3 'SAME' convolution (NHWC): the forward pass, the input gradient, the kernel gradient, and the kernel
gradient written as im2col + matmul. The whole CIFAR ResNet-32 on a batch: the inference forward and the gradient
of the cross-entropy (BatchNorm in training mode), in JAX and in PyTorch (its twin in benchmarks/torch_models.py,
channels_last, eager). Medians of 5 calls after a warm-up; the load average before and after is recorded.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from common import machine, write_json

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DIMS = ("NHWC", "HWIO", "NHWC")


def _median_seconds(fn, *args) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(5):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _resnet32_seconds(batch: int, threads: int) -> dict[str, float]:
  """Inference forward and cross-entropy gradient of ResNet-32 (32x32x3, 100 classes), JAX and PyTorch."""
  import torch
  from ltr_jax.models import create_model
  from torch_models import build_torch_model
  torch.set_num_threads(threads)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(batch, 32, 32, 3)).astype(np.float32)
  labels = rng.integers(0, 100, batch)
  model = create_model("resnet32", 100)
  x, y = jnp.asarray(images), jnp.asarray(labels)
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x)

  def loss(params, x, y):
    (logits, _), _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=True,
                                 mutable=["batch_stats"])
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

  net = build_torch_model("resnet32", 100, in_channels=3).to(memory_format=torch.channels_last)
  tx = torch.from_numpy(images.transpose(0, 3, 1, 2)).contiguous(memory_format=torch.channels_last)
  ty = torch.from_numpy(labels)

  def torch_forward():
    net.eval()
    with torch.no_grad():
      return net(tx)

  def torch_grad():
    net.train()
    net.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(net(tx), ty).backward()

  def torch_seconds(fn):
    fn()
    times = []
    for _ in range(5):
      start = time.perf_counter()
      fn()
      times.append(time.perf_counter() - start)
    return float(np.median(times))

  return {
      "resnet32_forward_jax": _median_seconds(jax.jit(lambda v, x: model.apply(v, x, train=False)), variables, x),
      "resnet32_grad_jax": _median_seconds(jax.jit(jax.grad(loss)), variables["params"], x, y),
      "resnet32_forward_torch": torch_seconds(torch_forward), "resnet32_grad_torch": torch_seconds(torch_grad)
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", default="")
  parser.add_argument("--channels", type=int, default=16)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
  args = parser.parse_args()
  load_before = os.getloadavg()
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((args.batch, args.size, args.size, args.channels), np.float32))
  dy = jnp.asarray(rng.random((args.batch, args.size, args.size, args.channels), np.float32))
  k = jnp.asarray(rng.random((3, 3, args.channels, args.channels), np.float32))

  def conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=DIMS)

  def kernel_grad_im2col(x, dy):
    patches = jax.lax.conv_general_dilated_patches(x, (3, 3), (1, 1), "SAME", dimension_numbers=DIMS)
    return jnp.einsum("nhwp,nhwo->po", patches, dy)

  seconds = {
      "forward": _median_seconds(jax.jit(conv), x, k),
      "input_grad": _median_seconds(jax.jit(lambda x, dy: jax.vjp(lambda x: conv(x, k), x)[1](dy)[0]), x, dy),
      "kernel_grad": _median_seconds(jax.jit(lambda x, dy: jax.vjp(lambda k: conv(x, k), k)[1](dy)[0]), x, dy),
      "kernel_grad_im2col": _median_seconds(jax.jit(kernel_grad_im2col), x, dy),
  }
  model = _resnet32_seconds(args.batch, args.threads)
  load = {"before": list(load_before), "after": list(os.getloadavg())}
  print(f"3x3 conv, {args.channels} -> {args.channels} channels, batch {args.batch} x {args.size}x{args.size}, "
        f"{jax.default_backend()}; load average {load['before'][0]:.2f} before, {load['after'][0]:.2f} after")
  print("| computation | seconds | x forward |\n|---|---:|---:|")
  for name, s in seconds.items():
    print(f"| {name} | {s:.4f} | {s / seconds['forward']:.1f} |")
  print(
      f"\nResNet-32, batch {args.batch} of 32x32x3, seconds per call\n| | JAX | PyTorch | JAX / PyTorch |\n|---|---:|---:|---:|"
  )
  for part in ("forward", "grad"):
    jx, th = model[f"resnet32_{part}_jax"], model[f"resnet32_{part}_torch"]
    print(f"| {'inference forward' if part == 'forward' else 'gradient (training mode)'} | {jx:.3f} | {th:.3f} | "
          f"{jx / th:.2f} |")
  if args.json:
    import torch
    write_json(
        args.json, {
            "seconds": {**seconds, **model}, "shape": vars(args), "load_average": load, "machine": machine(
                f"jax {jax.__version__}", f"torch {torch.__version__}")
        })


if __name__ == "__main__":
  main()

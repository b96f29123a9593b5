"""Why the JAX training step is slow on CPU: XLA:CPU's convolution gradients, one 3x3 conv at a time.

python benchmarks/conv_grad.py [--json PATH] [--channels 16] [--size 32] [--batch 128]
Times the forward pass, the input gradient and the kernel gradient of one 3x3 'SAME' convolution (NHWC),
and the kernel gradient written as im2col + matmul, medians of 5 calls after a warm-up.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from common import machine, write_json

DIMS = ("NHWC", "HWIO", "NHWC")


def _median_seconds(fn, *args) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(5):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", default="")
  parser.add_argument("--channels", type=int, default=16)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--batch", type=int, default=128)
  args = parser.parse_args()
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
  print(f"3x3 conv, {args.channels} -> {args.channels} channels, batch {args.batch} x {args.size}x{args.size}, "
        f"{jax.default_backend()}")
  print("| computation | seconds | x forward |\n|---|---:|---:|")
  for name, s in seconds.items():
    print(f"| {name} | {s:.4f} | {s / seconds['forward']:.1f} |")
  if args.json:
    write_json(args.json, {"seconds": seconds, "shape": vars(args), "machine": machine(f"jax {jax.__version__}")})


if __name__ == "__main__":
  main()

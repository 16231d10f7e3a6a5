"""The measurements behind stargrad's kernel choices (a script, not a test): each design
decision that docstrings explain by speed is timed here against the alternative it replaced,
on this machine, so it can be re-measured when JAX/XLA or the hardware change.

- bcnn conv block forward: scaled shifted slices (`bcnn._correlate`) vs `lax.conv`;
- bcnn conv block gradient: the hand-written VJP vs autodiff of the same forward;
- dropout masks: the counter hash (`layers.keep_mask`) vs a threefry Bernoulli draw, run
  and compile time;
- per-chunk Jacobian sums: a loop over stars (`attribution.jacobian._masked_sums`) vs XLA's
  reduce over the leading axis.

    .venv/bin/python bench/bench_kernels.py [--batch 64] [--repeats 20]
"""
from __future__ import annotations

import argparse
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from stargrad.sdss import apogee
from stargrad import layers
from stargrad.attribution.jacobian import _masked_sums
from stargrad.models import bcnn

P = apogee.N_PIX_GAPLESS


def best_time(fn, *args, repeats: int) -> float:
    """Best-of wall time (s) of a compiled call, after one warm-up (compile) call."""
    jax.block_until_ready(fn(*args))
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def compile_time(fn, *args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def conv_block_inputs(batch: int):
    spec = bcnn.trunk_spec("bench", P, (2, 4), 8, 4, (196, 96), 0.3)
    params = layers.init_params(jax.random.key(0), bcnn.trunk_layout(spec))
    x = jax.random.normal(jax.random.key(1), (batch, P)) * 0.05
    return spec, params, x


def lax_conv_features(params, x, spec):
    """The same conv -> ReLU -> conv -> ReLU -> max pool with lax.conv (Keras "same")."""
    h = x[:, :, None]
    for name in ("conv1", "conv2"):
        w, b = params[name]["w"], params[name]["b"]
        k = w.shape[0]
        h = jax.lax.conv_general_dilated(h, w, (1,), [((k - 1) // 2, k // 2)],
                                         dimension_numbers=("NWC", "WIO", "NWC")) + b
        h = jax.nn.relu(h)
    n = h.shape[1] // spec.pool_length * spec.pool_length
    h = h[:, :n].reshape(h.shape[0], -1, spec.pool_length, h.shape[2]).max(axis=2)
    return h.reshape(h.shape[0], -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rows = []
    spec, params, x = conv_block_inputs(args.batch)

    slices = jax.jit(lambda p, xx: bcnn.conv_features(p, xx, None, spec))
    conv = jax.jit(lambda p, xx: lax_conv_features(p, xx, spec))
    rows.append(("conv block forward, batch %d" % args.batch, "shifted slices",
                 best_time(slices, params, x, repeats=args.repeats), "lax.conv",
                 best_time(conv, params, x, repeats=args.repeats)))

    def loss_of(features):
        return jax.jit(jax.grad(lambda p, xx: jnp.sum(jnp.square(features(p, xx)))))
    custom = loss_of(lambda p, xx: bcnn.conv_features(p, xx, None, spec))
    custom_time = best_time(custom, params, x, repeats=args.repeats)
    plain = lambda pool, *a: bcnn._conv_block_forward(pool, *a, elementwise_pool=False)[0]  # noqa: E731
    with mock.patch.object(bcnn, "_conv_block", plain):
        auto = loss_of(lambda p, xx: bcnn.conv_features(p, xx, None, spec))
        auto_time = best_time(auto, params, x, repeats=args.repeats)
    rows.append(("conv block gradient", "custom VJP", custom_time, "autodiff", auto_time))

    shape = (args.batch, 196)
    key = jax.random.key(2)
    hashed = jax.jit(lambda k: layers.keep_mask(k, shape, 0.3, salt=1))
    threefry = jax.jit(lambda k: jax.random.bernoulli(k, 0.7, shape))
    rows.append(("dropout mask %s: compile" % (shape,), "hash", compile_time(hashed, key),
                 "bernoulli", compile_time(threefry, key)))
    rows.append(("dropout mask %s: run" % (shape,), "hash",
                 best_time(hashed, key, repeats=args.repeats), "bernoulli",
                 best_time(threefry, key, repeats=args.repeats)))

    j = jax.random.normal(jax.random.key(3), (32, 22, P))
    looped = jax.jit(lambda a: _masked_sums(a, 32))
    reduced = jax.jit(lambda a: (a.sum(0), jnp.abs(a).sum(0)))
    rows.append(("Jacobian chunk sums (32, 22, 7514)", "loop", best_time(looped, j,
                                                                        repeats=args.repeats),
                 "reduce", best_time(reduced, j, repeats=args.repeats)))

    print(f"{'what':42s} {'chosen':>15s} {'ms':>9s} {'alternative':>12s} {'ms':>9s} {'ratio':>6s}")
    for what, a_name, a, b_name, b in rows:
        print(f"{what:42s} {a_name:>15s} {a * 1e3:9.2f} {b_name:>12s} {b * 1e3:9.2f} "
              f"{b / a:6.2f}")


if __name__ == "__main__":
    main()

"""Building blocks shared by the network families: hyper-parameter checks, parameter layouts
drawn in one go (`Init`, `init_params`), dense layers and hash-based MC dropout."""
from __future__ import annotations

import math
import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

#: astroNN's RandomNormal(0, 0.05) for conv and hidden dense kernels.
ASTRONN_INIT_STD = 0.05


def positive_ints(family: str, name: str, value, length: int | None = None) -> tuple:
    """Check a hyper-parameter list of positive integers (optionally of a given length)."""
    try:
        out = tuple(operator.index(v) for v in value)
    except TypeError:
        out = None
    if out is None or any(v < 1 for v in out) or (length is not None and len(out) != length):
        size = f"{length} " if length is not None else ""
        raise ValueError(f"{family}: {name} must be a list of {size}positive integers, "
                         f"got {value!r}")
    return out


def boolean(family: str, name: str, value) -> bool:
    """Check a true/false hyper-parameter (YAML true/false, not 0/1 or a string)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{family}: {name} must be true or false, got {value!r}")
    return bool(value)



class Init(NamedTuple):
    """How to initialise one parameter array: N(0, scale^2), U(-scale, scale) or zeros."""
    kind: str
    shape: tuple
    scale: float = 0.0


def normal_dense(fan_in: int, fan_out: int, std: float = ASTRONN_INIT_STD) -> dict:
    """Dense layer with N(0, std^2) kernel and zero bias (astroNN's hidden layers)."""
    return {"w": Init("normal", (fan_in, fan_out), std), "b": Init("zeros", (fan_out,))}


def glorot_dense(fan_in: int, n_units: int, unit_width: int | None = None) -> dict:
    """Dense layer with Keras glorot_uniform kernel and zero bias.

    With `unit_width`, the columns are initialised as separate Dense(`unit_width`) layers
    (astroNN's per-label Dense(1) heads) stacked side by side."""
    limit = math.sqrt(6.0 / (fan_in + (unit_width or n_units)))
    return {"w": Init("uniform", (fan_in, n_units), limit), "b": Init("zeros", (n_units,))}


def init_params(key, layout):
    """Draw a parameter pytree from a pytree of `Init` leaves.

    All normal and all uniform entries come from one draw each (two threefry calls however
    many layers), which keeps init fast to compile and to run eagerly."""
    leaves, treedef = jax.tree.flatten(layout, is_leaf=lambda v: isinstance(v, Init))
    sizes = {kind: sum(math.prod(v.shape) for v in leaves if v.kind == kind)
             for kind in ("normal", "uniform")}
    k_normal, k_uniform = jax.random.split(key)
    pools = {"normal": jax.random.normal(k_normal, (sizes["normal"],)),
             "uniform": jax.random.uniform(k_uniform, (sizes["uniform"],), minval=-1.0)}
    # Called eagerly (`train.fit` jits `init`, a family's `init_data` may not), carve the pools
    # in numpy and put each array on the device as it is: each jnp slice, or jnp.asarray, of a
    # new shape would compile its own XLA program (seconds for the censored model's ~100 arrays).
    traced = isinstance(pools["normal"], jax.core.Tracer)
    xp, put = (jnp, jnp.asarray) if traced else (np, jax.device_put)
    pools = {kind: xp.asarray(pool) for kind, pool in pools.items()}
    used = {"normal": 0, "uniform": 0}
    out = []
    for leaf in leaves:
        size = math.prod(leaf.shape)
        if leaf.kind == "zeros":
            out.append(put(xp.zeros(leaf.shape, np.float32)))
            continue
        start = used[leaf.kind]
        used[leaf.kind] = start + size
        out.append(put(leaf.scale * pools[leaf.kind][start:start + size].reshape(leaf.shape)))
    return jax.tree.unflatten(treedef, out)


def dense(layer: dict, h):
    return h @ layer["w"] + layer["b"]


def _mix(v):
    """A 32-bit integer finaliser hash (good avalanche; "lowbias32")."""
    v = (v ^ (v >> 16)) * jnp.uint32(0x7FEB352D)
    v = (v ^ (v >> 15)) * jnp.uint32(0x846CA68B)
    return v ^ (v >> 16)


def keep_mask(key, shape: tuple, rate: float, salt: int):
    """Boolean dropout keep-mask, P(keep) = 1 - rate, from `key` and a per-site `salt`.

    `key` is one PRNG key, or one per row of the leading axis (shape[0] keys): each row's
    mask then depends on its own key only, not on the other rows or on where the row sits in
    a batch (MC inference uses this so that a star's prediction is the same in any batch).
    A counter-based hash of the key's data rather than a jax.random Bernoulli draw, which is
    much slower to compile and to run on CPU (bench/bench_kernels.py); same key and salt ->
    same mask. The key words and the salt are mixed once into a scalar stream (per row); each
    element is one hash round of (counter ^ stream). Another key is thus the same hashed
    sequence read at a random 32-bit offset, which overlaps a tensor of n elements with
    probability ~n / 2^32.
    """
    data = jax.random.key_data(key)
    salt_word = jnp.uint32((salt * 0x9E3779B9 + 1) & 0xFFFFFFFF)
    stream = _mix(_mix(data[..., 0] ^ salt_word) + data[..., -1])
    threshold = jnp.uint32(min(round(rate * 2**32), 2**32 - 1))
    if stream.ndim == 0:
        counter = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
        return _mix(counter ^ stream) >= threshold
    if stream.shape != (shape[0],):
        raise ValueError(f"keep_mask: {stream.shape[0]} row keys for shape {shape}")
    counter = jax.lax.iota(jnp.uint32, math.prod(shape[1:])).reshape((1,) + tuple(shape[1:]))
    return _mix(counter ^ stream.reshape((-1,) + (1,) * (len(shape) - 1))) >= threshold


def dropout(key, h, rate: float, salt: int):
    """Inverted dropout with keep probability 1 - rate (one key, or one per row of h, as
    `keep_mask`); identity when key is None."""
    if key is None or rate == 0.0:
        return h
    return jnp.where(keep_mask(key, h.shape, rate, salt), h / (1.0 - rate), 0.0)

"""ApogeeBCNN (astroNN, Leung & Bovy 2019): a Bayesian CNN with MC dropout and a
heteroscedastic (log-variance) head.

Input: (B, P) normalized flux, per-pixel training mean subtracted (`input_norm="mean"`,
astroNN input mode 3). Graph: Conv1D(num_filters[0], filter_len, "same") -> ReLU -> dropout ->
Conv1D(num_filters[1]) -> ReLU -> MaxPool(pool_length) -> flatten -> dropout ->
Dense(num_hidden[0]) -> ReLU -> dropout -> Dense(num_hidden[1]) -> ReLU -> heads `value` and
`log_var` (log predictive variance, normalized label units).

Dropout is inverted MC dropout, active whenever `apply`/`loss` get a PRNG key and off with
`key=None` (the one deliberate difference from astroNN, whose MCDropout is always on); `train`
is accepted for the interface and does not change anything. Masks come from `keep_mask`, a
counter-based hash of the key (fast on CPU), one salt per dropout site.

The conv block (conv -> ReLU -> dropout -> conv -> ReLU -> max pool) is written with
channels leading and pixels on the last axis, each convolution as scaled shifted slices that XLA
fuses into loops over long pixel rows, and has a hand-written VJP (`_conv_block`). Same function
as Keras "same" Conv1D ((K-1)//2 zeros on the left) and valid max pooling; the max-pool gradient
goes to the first maximum of a window, as TF's. Flattening is time-major, channel-minor, as
Keras's Flatten. The VJP is reverse-mode only: use jax.grad / jacrev (not jacfwd) on these
models.
"""
from __future__ import annotations

import functools
import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..layers import (ASTRONN_INIT_STD, Init, boolean, dense, dropout, glorot_dense, init_params,
                      normal_dense, positive_ints)
from ..losses import masked_bce_with_logits, per_star_mean
from . import Model, Traits

TRAITS = Traits()

DEFAULTS = {"num_filters": (2, 4), "filter_len": 8, "pool_length": 4,
            "num_hidden": (196, 96), "dropout_rate": 0.3, "l2": 5e-9}


class TrunkSpec(NamedTuple):
    """Static shape of the conv + dense trunk shared by bcnn and bcnn_censored."""
    n_inputs: int
    num_filters: tuple
    filter_len: int
    pool_length: int
    num_hidden: tuple          # the trunk's two dense widths
    dropout_rate: float

    @property
    def n_pooled(self) -> int:
        return self.n_inputs // self.pool_length

    @property
    def reach(self) -> tuple[int, int]:
        """Neighbouring blocks a conv output block reads on the left and on the right."""
        lo = (self.filter_len - 1) // 2
        hi = self.filter_len - 1 - lo
        return -(-lo // self.pool_length), -(-hi // self.pool_length)


def trunk_spec(family: str, n_inputs: int, num_filters, filter_len, pool_length, num_hidden,
               dropout_rate) -> TrunkSpec:
    """Validate the trunk hyper-parameters; raise ValueError naming the bad one."""
    num_filters = positive_ints(family, "num_filters", num_filters, 2)
    (filter_len,) = positive_ints(family, "filter_len", [filter_len])
    (pool_length,) = positive_ints(family, "pool_length", [pool_length])
    dropout_rate = float(dropout_rate)
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"{family}: dropout_rate must be in [0, 1), got {dropout_rate}")
    if operator.index(n_inputs) < pool_length:
        raise ValueError(f"{family}: n_inputs={n_inputs} is shorter than pool_length={pool_length}")
    return TrunkSpec(int(n_inputs), num_filters, filter_len, pool_length, tuple(num_hidden),
                     dropout_rate)


# ---------------------------------------------------------------- conv block

def _correlate(h, w):
    """Valid cross-correlation along the last axis: (..., C_in, n + K - 1) -> (..., C_out, n),
    out[d, i] = sum_{k, c} w[k, c, d] h[c, i + k]; w is (K, C_in, C_out).

    Written as K * C_in * C_out scaled shifted slices, which XLA fuses into one loop over long
    pixel rows; with 1-4 channels that beats lax.conv or small matmuls on CPU
    (bench/bench_kernels.py)."""
    k_len, c_in, c_out = w.shape
    n = h.shape[-1] - k_len + 1
    return jnp.stack([sum(w[k, c, d] * h[..., c, k:k + n] for k in range(k_len)
                          for c in range(c_in)) for d in range(c_out)], axis=-2)


def _correlate_transposed(g, w):
    """The transpose of `_correlate` in its input: (..., C_out, n) -> (..., C_in, n + K - 1)."""
    k_len = w.shape[0]
    pad = [(0, 0)] * (g.ndim - 1) + [(k_len - 1, k_len - 1)]
    return _correlate(jnp.pad(g, pad), jnp.flip(w, 0).transpose(0, 2, 1))


def _kernel_grad(h, g, k_len: int):
    """Gradient of sum(g * _correlate(h, w)) in w: (B, C_in, n + K - 1), (B, C_out, n) -> (K,
    C_in, C_out). A matmul batched over stars (then summed), which runs faster on CPU than one
    contraction over stars and pixels together."""
    n = g.shape[-1]
    cols = jnp.stack([h[..., k:k + n] for k in range(k_len)], axis=1)       # (B, K, C_in, n)
    per_star = jnp.einsum("bjn,bdn->bjd", cols.reshape(h.shape[0], -1, n), g)
    return per_star.sum(0).reshape(k_len, h.shape[1], g.shape[1])


def _first_max(y, pooled):
    """(B, C, T, pool) one-hot of the first position in each pool window equal to its max
    (TF's max-pool gradient routing; ties, e.g. flat zero-padded spectra, go to one pixel)."""
    hits, taken = [], False
    for p in range(y.shape[-1]):          # unrolled: cumsum lowers to a slow reduce-window
        hit = y[..., p] == pooled
        hits.append(hit & ~taken)
        taken = taken | hit
    return jnp.stack(hits, axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _conv_block(pool: int, w1, b1, w2, b2, xp, gate):
    """Conv1 -> ReLU -> x gate -> conv2 -> ReLU -> max pool(`pool`) on (B, n1 + K - 1) padded
    flux; `gate` (B, C1, n1) is the dropout scale (0 or 1/(1-rate)) where conv1's output lies
    on the spectrum, 0 in the "same" padding. Returns (B, C2, (n1 - K + 1) // pool).

    A custom VJP: autodiff of the shifted slices gives one reduction per kernel entry and
    chains of pads, slower than the explicit backward below (bench/bench_kernels.py). Without
    differentiation (prediction, MC dropout) the pool is an elementwise maximum of the pool
    offsets, which XLA fuses into the conv loop; under differentiation it is a reduce, whose
    materialised output the backward reads (an elementwise pool there would be recomputed
    inside every consumer)."""
    return _conv_block_forward(pool, w1, b1, w2, b2, xp, gate, elementwise_pool=True)[0]


def _conv_block_forward(pool, w1, b1, w2, b2, xp, gate, elementwise_pool: bool):
    pre = _correlate(xp[:, None, :], w1) + b1[:, None]
    gate1 = jnp.where(pre > 0, gate, 0.0)
    h = pre * gate1
    y = _correlate(h, w2) + b2[:, None]
    y = y[..., :y.shape[-1] // pool * pool].reshape(y.shape[:-1] + (-1, pool))
    if elementwise_pool:
        pooled = functools.reduce(jnp.maximum, [y[..., p] for p in range(pool)])
    else:
        pooled = y.max(axis=-1)
    pooled = jax.nn.relu(pooled)
    return pooled, (w1, w2, xp, gate1, h, y, pooled)


_conv_block_fwd = functools.partial(_conv_block_forward, elementwise_pool=False)


def _conv_block_bwd(pool, res, g):
    w1, w2, xp, gate1, h, y, pooled = res
    route = _first_max(y, pooled) & (pooled > 0)[..., None]
    gy = jnp.where(route, g[..., None], 0.0).reshape(y.shape[:-2] + (-1,))
    n2 = h.shape[-1] - w2.shape[0] + 1
    gy = jnp.pad(gy, [(0, 0)] * (gy.ndim - 1) + [(0, n2 - gy.shape[-1])])
    gpre = _correlate_transposed(gy, w2) * gate1
    gx = _correlate_transposed(gpre, w1)[..., 0, :]
    return (_kernel_grad(xp[:, None, :], gpre, w1.shape[0]), gpre.sum((0, 2)),
            _kernel_grad(h, gy, w2.shape[0]), gy.sum((0, 2)), gx, jnp.zeros_like(gate1))


_conv_block.defvjp(_conv_block_fwd, _conv_block_bwd)


def conv_features(params: dict, x, key, spec: TrunkSpec):
    """Conv -> ReLU -> dropout -> conv -> ReLU -> max pool -> flatten: (B, P) -> (B, T * C2),
    flattened time-major, channel-minor as Keras."""
    k_len, pool = spec.filter_len, spec.pool_length
    lo = (k_len - 1) // 2                    # Keras/TF "same": (K-1)//2 zeros on the left
    n2 = spec.n_pooled * pool                # conv2 outputs that reach the pooling
    n1 = n2 + k_len - 1                      # conv1 outputs conv2 reads: pixels -lo .. n2+hi-1
    xp = jnp.pad(x, ((0, 0), (2 * lo, max(n1 + k_len - 1 - 2 * lo - x.shape[1], 0))))
    pos = np.arange(n1) - lo
    gate = np.broadcast_to(((pos >= 0) & (pos < x.shape[1])).astype(np.float32),
                           (spec.num_filters[0], n1))
    if key is not None and spec.dropout_rate > 0:
        gate = dropout(key, jnp.broadcast_to(gate, (x.shape[0],) + gate.shape),
                       spec.dropout_rate, salt=0)
    gate = jnp.broadcast_to(gate, (x.shape[0],) + gate.shape[-2:])
    c = params["conv1"], params["conv2"]
    pooled = _conv_block(pool, c[0]["w"], c[0]["b"], c[1]["w"], c[1]["b"],
                         xp[:, :n1 + k_len - 1], gate)
    return pooled.transpose(0, 2, 1).reshape(x.shape[0], -1)


def trunk_layout(spec: TrunkSpec) -> dict:
    """`Init` layout of the conv and hidden dense parameters: N(0, 0.05^2) kernels, zero biases."""
    c1, c2 = spec.num_filters
    k = spec.filter_len
    return {"conv1": {"w": Init("normal", (k, 1, c1), ASTRONN_INIT_STD), "b": Init("zeros", (c1,))},
            "conv2": {"w": Init("normal", (k, c1, c2), ASTRONN_INIT_STD), "b": Init("zeros", (c2,))},
            "dense1": normal_dense(spec.n_pooled * c2, spec.num_hidden[0]),
            "dense2": normal_dense(spec.num_hidden[0], spec.num_hidden[1])}


def apply_trunk(params: dict, x, key, spec: TrunkSpec):
    """(B, P) flux -> (B, num_hidden[1]) ReLU features; MC dropout when `key` is given."""
    h = dropout(key, conv_features(params, x, key, spec), spec.dropout_rate, salt=1)
    h = dropout(key, jax.nn.relu(dense(params["dense1"], h)), spec.dropout_rate, salt=2)
    return jax.nn.relu(dense(params["dense2"], h))


def trunk_l2(params: dict) -> jnp.ndarray:
    """Sum of squared conv and hidden dense kernels (the L2-regularised weights)."""
    return sum(jnp.sum(jnp.square(params[n]["w"])) for n in ("conv1", "conv2", "dense1", "dense2"))


# ---------------------------------------------------------------- loss

#: Soft bounds of the predicted log-variance (normalized label units): exp() of the raw head
#: underflows to 0 below about -87 (float32), which makes the loss infinite when a label has
#: no catalogue error; 20 bounds the other side. Well inside the bounds the map is the identity.
LOG_VAR_BOUNDS = (-20.0, 20.0)


def bounded_log_var(raw):
    """lo + softplus(raw - lo) - softplus(raw - hi): within (lo, hi), the identity to float32
    precision for lo + 15 < raw < hi - 15, and never a zero gradient."""
    lo, hi = LOG_VAR_BOUNDS
    return lo + jax.nn.softplus(raw - lo) - jax.nn.softplus(raw - hi)


def robust_nll_terms(value, log_var, y, y_err, valid):
    """astroNN's robust heteroscedastic loss per label: 0.5 (y - value)^2 / V + 0.5 log V with
    V = exp(log_var) + y_err^2 (normalized units); exactly 0, with zero gradient, where invalid."""
    resid = jnp.where(valid, y - value, 0.0)
    s = jnp.where(valid, log_var, 0.0)
    err = jnp.where(valid, y_err, 0.0)
    var = jnp.exp(s) + jnp.square(err)
    return 0.5 * jnp.square(resid) / var + 0.5 * jnp.log(var)


def heteroscedastic_loss(out: dict, batch: dict, penalty, label_errors: bool = True):
    """Per-star robust loss (sum over valid labels / their number) averaged over the batch,
    plus `penalty`; metrics: the NLL alone and the masked mean absolute error. With
    `label_errors=False` the catalogue errors are taken as zero (exact labels)."""
    valid = batch["valid"]
    nll = per_star_mean(robust_nll_terms(out["value"], out["log_var"], batch["y"],
                                         batch["y_err"] if label_errors else 0.0, valid), valid)
    mae = per_star_mean(jnp.abs(jnp.where(valid, batch["y"] - out["value"], 0.0)), valid)
    return nll + penalty, {"nll": nll, "mae": mae}


# ---------------------------------------------------------------- family

def build(*, n_inputs: int, n_outputs: int, kind: str = "regression",
          num_filters=DEFAULTS["num_filters"], filter_len=DEFAULTS["filter_len"],
          pool_length=DEFAULTS["pool_length"], num_hidden=DEFAULTS["num_hidden"],
          dropout_rate=DEFAULTS["dropout_rate"], l2=DEFAULTS["l2"],
          label_errors=True) -> Model:
    """ApogeeBCNN for `n_inputs` pixels and `n_outputs` labels (astroNN code defaults).

    Regression returns `value` and `log_var` (B, K). Classification (binary, e.g. evstate)
    returns `value` = sigmoid probability and `logit`, no variance head, trained with masked
    binary cross-entropy. `label_errors=False` drops the catalogue errors from the loss (for
    labels known to be exact, such as the mock's)."""
    spec = trunk_spec("bcnn", n_inputs, num_filters, filter_len, pool_length,
                      positive_ints("bcnn", "num_hidden", num_hidden, 2), dropout_rate)
    (n_outputs,) = positive_ints("bcnn", "n_outputs", [n_outputs])
    l2 = float(l2)
    if l2 < 0:
        raise ValueError(f"bcnn: l2 must be >= 0, got {l2}")
    label_errors = boolean("bcnn", "label_errors", label_errors)
    classify = kind == "classification"

    layout = {"trunk": trunk_layout(spec), "value": glorot_dense(spec.num_hidden[1], n_outputs)}
    if not classify:
        layout["log_var"] = glorot_dense(spec.num_hidden[1], n_outputs)

    def init(key):
        return init_params(key, layout)

    def apply(params, x, key=None, train=False, x_err=None):
        h = apply_trunk(params["trunk"], x, key, spec)
        z = dense(params["value"], h)
        if classify:
            return {"value": jax.nn.sigmoid(z), "logit": z}
        return {"value": z, "log_var": bounded_log_var(dense(params["log_var"], h))}

    def loss(params, batch, key):
        out = apply(params, batch["x"], key, train=True)
        penalty = l2 * trunk_l2(params["trunk"])
        if classify:
            bce = masked_bce_with_logits(out["logit"], batch["y"], batch["valid"])
            return bce + penalty, {"bce": bce}
        return heteroscedastic_loss(out, batch, penalty, label_errors)

    return Model(init=init, apply=apply, loss=loss, stochastic=spec.dropout_rate > 0,
                 input_norm="mean")

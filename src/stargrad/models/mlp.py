"""Multilayer perceptron: normalized flux -> dense hidden layers -> normalized labels.

Regression outputs are linear; `kind="classification"` returns the sigmoid probability as
`value` and the pre-sigmoid `logit`, trained with binary cross-entropy. With `dropout` > 0 the
model is stochastic (MC dropout, as astroNN): dropout is applied after every hidden activation
whenever `apply`/`loss` get a key, and is off with `key=None`. `l2` adds
l2 * sum(w^2) over all weight matrices (not biases) to the loss, like a Keras kernel regularizer.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..layers import dense, dropout as mc_dropout, positive_ints
from ..losses import label_loss
from . import Model, Traits

TRAITS = Traits()

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid,
               "gelu": jax.nn.gelu, "leaky_relu": jax.nn.leaky_relu}
_HE_INIT = ("relu", "gelu", "leaky_relu")


def _init_layer(key, fan_in: int, fan_out: int, he: bool) -> dict:
    """He-normal (std sqrt(2/fan_in)) or Glorot-uniform weights, zero biases."""
    if he:
        w = jax.random.normal(key, (fan_in, fan_out)) * math.sqrt(2.0 / fan_in)
    else:
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        w = jax.random.uniform(key, (fan_in, fan_out), minval=-limit, maxval=limit)
    return {"w": w, "b": jnp.zeros((fan_out,))}


def build(*, n_inputs: int, n_outputs: int, kind: str = "regression",
          hidden=(512, 256, 128), activation: str = "relu", dropout: float = 0.0,
          l2: float = 0.0) -> Model:
    """MLP with hidden widths `hidden` (e.g. [32], [8, 4, 2]; [] is a linear/logistic model)."""
    hidden = positive_ints("mlp", "hidden", hidden)
    if activation not in ACTIVATIONS:
        raise ValueError(f"mlp: activation must be one of {sorted(ACTIVATIONS)}, "
                         f"got {activation!r}")

    dropout, l2 = float(dropout), float(l2)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"mlp: dropout must be in [0, 1), got {dropout}")
    if l2 < 0:
        raise ValueError(f"mlp: l2 must be >= 0, got {l2}")
    act = ACTIVATIONS[activation]
    widths = [n_inputs, *hidden, n_outputs]

    def init(key):
        keys = jax.random.split(key, len(widths) - 1)
        n_hidden = len(hidden)
        return {"dense": [_init_layer(k, a, b, he=i < n_hidden and activation in _HE_INIT)
                          for i, (k, a, b) in enumerate(zip(keys, widths[:-1], widths[1:]))]}

    def apply(params, x, key=None, train=False, x_err=None):
        *layers, head = params["dense"]
        h = x
        for i, layer in enumerate(layers):
            h = mc_dropout(key, act(dense(layer, h)), dropout, salt=i)
        z = dense(head, h)
        if kind == "classification":
            return {"value": jax.nn.sigmoid(z), "logit": z}
        return {"value": z}

    def loss(params, batch, key):
        value, metrics = label_loss(apply(params, batch["x"], key, train=True), batch, kind)
        if l2 > 0:
            value = value + l2 * sum(jnp.sum(jnp.square(layer["w"])) for layer in params["dense"])
        return value, metrics

    return Model(init=init, apply=apply, loss=loss, stochastic=dropout > 0)

"""ApogeeBCNNCensored (astroNN): Teff, log g and [Fe/H] from the full-spectrum BCNN trunk, every
other abundance from its own ASPCAP element windows only.

Per censored label: gather the label's DR17 window pixels (`apogee.window_mask`, 7514 grid) ->
Dense(num_hidden[2]) -> ReLU -> dropout -> Dense(num_hidden[3]) -> ReLU -> dropout (C and N use
8x and 4x the units), concatenated with `fullspec_hidden` = [aux(num_hidden[4]),
stop_gradient(trunk label values)] -> Dense(1) value and Dense(1) log-variance. The trunk
reaches an element output only through the `aux_fullspec` features; the stop-gradient also
blocks input Jacobians through the trunk label values (astroNN master semantics).

`aux_fullspec` has astroNN's MaxNorm(maxnorm) kernel constraint as a reparameterisation: the
stored kernel v is used as v * min(1, maxnorm / |v_col|), so every forward pass satisfies the
constraint without a post-step projection hook in the shared training loop.

The 19 element sub-networks are an unrolled loop of gathers and small matmuls inside one jitted
program, rather than zero-padded, stacked per-element weights (windows differ in size by
two orders of magnitude, so padding would multiply the arithmetic).
Dropout, losses and outputs follow `bcnn` (dropout on with a key, off with key=None).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..sdss import apogee
from ..layers import (boolean, dense, glorot_dense, init_params, keep_mask, normal_dense,
                      positive_ints)
from . import Model, Traits
from .bcnn import (DEFAULTS, apply_trunk, bounded_log_var, heteroscedastic_loss, trunk_l2,
                   trunk_layout, trunk_spec)

TRAITS = Traits()

#: Labels predicted from the full-spectrum trunk (the rest are censored to their windows).
TRUNK_LABELS = ("teff", "logg", "Fe")
#: Censored labels whose two dense layers are wider, and by which factors (astroNN: C, N).
WIDE = {"C": (8, 4), "N": (8, 4)}


def build(*, n_inputs: int, n_outputs: int, kind: str = "regression", labels=None,
          num_filters=DEFAULTS["num_filters"], filter_len=DEFAULTS["filter_len"],
          pool_length=DEFAULTS["pool_length"], num_hidden=(192, 96, 32, 16, 2),
          dropout_rate=DEFAULTS["dropout_rate"], l2=DEFAULTS["l2"], maxnorm=0.5,
          label_errors=True) -> Model:
    """ApogeeBCNNCensored on the 7514-pixel grid.

    `labels` (default: the 22 `apogee.ASPCAP_LABELS` of the aspcap task, which needs
    n_outputs=22) names the outputs in order; teff/logg/Fe come from the trunk, every other
    label must have ASPCAP DR17 windows. Regression only. `label_errors` as in `bcnn.build`."""
    if kind != "regression":
        raise ValueError("bcnn_censored: only kind='regression' is supported (abundance labels)")
    if n_inputs != apogee.N_PIX_GAPLESS:
        raise ValueError(f"bcnn_censored: needs the {apogee.N_PIX_GAPLESS}-pixel grid for the "
                         f"element windows, got n_inputs={n_inputs}")
    if labels is None:
        if n_outputs != len(apogee.ASPCAP_LABELS):
            raise ValueError(f"bcnn_censored: without `labels` it predicts the "
                             f"{len(apogee.ASPCAP_LABELS)} aspcap labels, got "
                             f"n_outputs={n_outputs}; pass labels=[...] for another label set")

        labels = apogee.ASPCAP_LABELS
    labels = tuple(str(name) for name in labels)
    if len(labels) != n_outputs or len(set(labels)) != len(labels):
        raise ValueError(f"bcnn_censored: labels must be {n_outputs} distinct names, got {labels}")
    num_hidden = positive_ints("bcnn_censored", "num_hidden", num_hidden, 5)
    spec = trunk_spec("bcnn_censored", n_inputs, num_filters, filter_len, pool_length,
                      num_hidden[:2], dropout_rate)
    l2, maxnorm = float(l2), float(maxnorm)
    if l2 < 0 or maxnorm <= 0:
        raise ValueError(f"bcnn_censored: need l2 >= 0 and maxnorm > 0, got {l2}, {maxnorm}")
    label_errors = boolean("bcnn_censored", "label_errors", label_errors)
    trunk_labels = [name for name in labels if name in TRUNK_LABELS]
    elements = [name for name in labels if name not in TRUNK_LABELS]
    pixels = {}
    for name in elements:
        try:
            pixels[name] = np.flatnonzero(apogee.window_mask(name, n_inputs))
        except KeyError as err:
            raise ValueError(f"bcnn_censored: label {name!r} is not a trunk label "
                             f"{TRUNK_LABELS} and has no ASPCAP window ({err})") from None
        if pixels[name].size == 0:
            raise ValueError(f"bcnn_censored: the ASPCAP window of {name!r} covers no pixel")
    widths = {name: (num_hidden[2] * WIDE.get(name, (1, 1))[0],
                     num_hidden[3] * WIDE.get(name, (1, 1))[1]) for name in elements}
    n_fullspec = num_hidden[4] + len(trunk_labels)
    width = spec.num_hidden[1]

    layout = {"trunk": trunk_layout(spec), "aux": normal_dense(width, num_hidden[4]),
              "elements": {name: {"a": normal_dense(pixels[name].size, widths[name][0]),
                                  "b": normal_dense(*widths[name]),
                                  # columns: value, log_var (two Dense(1) heads)
                                  "head": glorot_dense(widths[name][1] + n_fullspec, 2, 1)}
                           for name in elements}}
    if trunk_labels:
        layout["trunk_value"] = glorot_dense(width, len(trunk_labels), 1)
        layout["trunk_log_var"] = glorot_dense(width, len(trunk_labels), 1)

    def init(key):
        return init_params(key, layout)

    def aux_kernel(v):
        norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=0) + 1e-24)
        return v * jnp.minimum(1.0, maxnorm / norm)

    offsets = np.cumsum([0] + [w for name in elements for w in widths[name]])
    rate = spec.dropout_rate

    def apply(params, x, key=None, train=False, x_err=None):
        keep = None
        if key is not None and rate > 0:
            # One mask for all element dropout layers (columns: a, b of each element in turn);
            # salts 0-2 are the trunk's.
            keep = keep_mask(key, (x.shape[0], int(offsets[-1])), rate, salt=3)

        def drop(h, layer: int):
            if keep is None:
                return h
            return jnp.where(keep[:, offsets[layer]:offsets[layer + 1]], h / (1.0 - rate), 0.0)

        h = apply_trunk(params["trunk"], x, key, spec)
        columns = {}
        fullspec = [h @ aux_kernel(params["aux"]["w"]) + params["aux"]["b"]]
        if trunk_labels:
            value, log_var = dense(params["trunk_value"], h), dense(params["trunk_log_var"], h)
            columns.update({name: (value[:, i], log_var[:, i])
                            for i, name in enumerate(trunk_labels)})
            fullspec.append(jax.lax.stop_gradient(value))
        fullspec = jnp.concatenate(fullspec, axis=-1)
        for i, name in enumerate(elements):
            p = params["elements"][name]
            e = drop(jax.nn.relu(dense(p["a"], x[:, pixels[name]])), 2 * i)
            e = drop(jax.nn.relu(dense(p["b"], e)), 2 * i + 1)
            out = dense(p["head"], jnp.concatenate([e, fullspec], axis=-1))
            columns[name] = (out[:, 0], out[:, 1])
        return {"value": jnp.stack([columns[n][0] for n in labels], axis=-1),
                "log_var": bounded_log_var(jnp.stack([columns[n][1] for n in labels], axis=-1))}

    def loss(params, batch, key):
        penalty = trunk_l2(params["trunk"]) + sum(
            jnp.sum(jnp.square(p["a"]["w"])) for p in params["elements"].values())
        return heteroscedastic_loss(apply(params, batch["x"], key, train=True), batch,
                                    l2 * penalty, label_errors)

    return Model(init=init, apply=apply, loss=loss, stochastic=spec.dropout_rate > 0,
                 input_norm="mean")

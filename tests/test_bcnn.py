"""bcnn / bcnn_censored families and MC-dropout inference: exact conv, hand-computed losses,
masking, censoring, stop-gradient, MC moments."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stargrad.sdss import apogee
from stargrad import layers, models, train
from stargrad.mc import _moments, mc_predict, star_seeds
from stargrad.models import bcnn


def normal(rng, shape):
    return rng.normal(size=shape).astype(np.float32)


def conv_reference(params, x, spec):
    """Keras Conv1D('same') -> ReLU -> Conv1D -> ReLU -> MaxPool(valid) -> Flatten via lax.conv."""
    dn = ("NWC", "WIO", "NWC")
    h = x[..., None]
    for name in ("conv1", "conv2"):
        h = jax.lax.conv_general_dilated(h, params[name]["w"], (1,), "SAME", dimension_numbers=dn)
        h = jax.nn.relu(h + params[name]["b"])
    t, p = spec.n_pooled, spec.pool_length
    return h[:, :t * p].reshape(len(x), t, p, -1).max(axis=2).reshape(len(x), -1)


@pytest.mark.parametrize("n_pix,filter_len,pool,filters",
                         [(203, 8, 4, (2, 4)), (64, 5, 3, (3, 2)), (50, 1, 2, (1, 1))])
def test_block_conv_equals_lax_conv(n_pix, filter_len, pool, filters):
    spec = bcnn.trunk_spec("t", n_pix, filters, filter_len, pool, (5, 3), 0.3)
    params = layers.init_params(jax.random.key(1), bcnn.trunk_layout(spec))
    rng = np.random.default_rng(n_pix)
    params = jax.tree.map(lambda a: a + 0.3 * np.abs(normal(rng, a.shape)), params)
    x = normal(rng, (3, n_pix))
    got = jax.jit(lambda p, xx: bcnn.conv_features(p, xx, None, spec))(params, x)
    want = jax.jit(lambda p, xx: conv_reference(p, xx, spec))(params, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(got).max()) > 0.1


@pytest.mark.parametrize("n_pix,filter_len,pool,filters",
                         [(203, 8, 4, (2, 4)), (64, 5, 3, (3, 2))])
def test_conv_block_custom_vjp_equals_autodiff(n_pix, filter_len, pool, filters):
    spec = bcnn.trunk_spec("t", n_pix, filters, filter_len, pool, (5, 3), 0.3)
    rng = np.random.default_rng(n_pix)
    params = jax.tree.map(lambda a: a + 0.2 * normal(rng, a.shape),
                          layers.init_params(jax.random.key(1), bcnn.trunk_layout(spec)))
    x = normal(rng, (3, n_pix))
    cot = normal(rng, (3, spec.n_pooled * filters[1]))
    grad = jax.jit(jax.grad(lambda f, p, xx: jnp.sum(cot * f(p, xx)), argnums=(1, 2)),
                   static_argnums=0)
    got = grad(lambda p, xx: bcnn.conv_features(p, xx, None, spec), params, x)
    want = grad(lambda p, xx: conv_reference(p, xx, spec), params, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # with a dropout gate: the hand-written backward against autodiff of the same forward
    k_len = filter_len
    n1 = spec.n_pooled * pool + k_len - 1
    xp = normal(rng, (3, n1 + k_len - 1))
    gate = np.where(rng.random((3, filters[0], n1)) < 0.3, 0.0, 1 / 0.7).astype(np.float32)
    c1, c2 = params["conv1"], params["conv2"]
    args = (c1["w"], c1["b"], c2["w"], c2["b"], xp)

    def total(block, *a):
        return jnp.sum(cot.reshape(3, -1, filters[1]).transpose(0, 2, 1) * block(*a, gate))

    custom = jax.grad(lambda *a: total(functools.partial(bcnn._conv_block, pool), *a),
                      argnums=range(5))(*args)
    plain = jax.grad(lambda *a: total(lambda *b: bcnn._conv_block_fwd(pool, *b)[0], *a),
                     argnums=range(5))(*args)
    for a, b in zip(custom, plain):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_max_pool_gradient_goes_to_one_pixel_on_ties():
    """A flat (all-zero) spectrum ties every pooling window: d sum(pooled) / d b2[c] must be
    the number of positive pooled outputs of channel c, not a multiple of it."""
    spec = bcnn.trunk_spec("t", 64, (2, 3), 5, 4, (5, 3), 0.3)
    params = layers.init_params(jax.random.key(0), bcnn.trunk_layout(spec))
    params["conv1"]["b"] = jnp.array([0.5, 0.2])
    params["conv2"]["b"] = jnp.array([0.1, -1.0, 0.3])
    x = np.zeros((2, 64), np.float32)
    pooled = np.asarray(bcnn.conv_features(params, x, None, spec)).reshape(2, -1, 3)
    g = jax.grad(lambda p: jnp.sum(bcnn.conv_features(p, x, None, spec)))(params)
    np.testing.assert_allclose(g["conv2"]["b"], (pooled > 0).sum(axis=(0, 1)), rtol=1e-6)
    assert (pooled[..., 1] == 0).all() and (pooled[..., 0] > 0).all()


def test_keep_mask_rate_and_independence():
    key = jax.random.key(3)
    a = np.asarray(layers.keep_mask(key, (200, 500), 0.3, salt=0))
    b = np.asarray(layers.keep_mask(key, (200, 500), 0.3, salt=1))
    c = np.asarray(layers.keep_mask(jax.random.fold_in(key, 1), (200, 500), 0.3, salt=0))
    for m in (a, b, c):
        assert abs(m.mean() - 0.7) < 0.005                       # 5 sigma is 0.0032
    for m in (b, c):
        assert abs((a & m).mean() - 0.49) < 0.006
    np.testing.assert_array_equal(a, layers.keep_mask(key, (200, 500), 0.3, salt=0))
    assert abs(a[:, 1:].astype(float).ravel() @ a[:, :-1].ravel() / a[:, 1:].size - 0.49) < 0.006
    # MC samples: masks of split keys agree only by chance (P(both kept) = 0.49 per pair)
    split = [np.asarray(layers.keep_mask(k, (200, 500), 0.3, salt=1))
             for k in jax.random.split(key, 8)]
    for i in range(8):
        for j in range(i):
            assert abs((split[i] & split[j]).mean() - 0.49) < 0.006


def make_batch(rng, n, n_pix, k):
    valid = rng.random((n, k)) > 0.3
    valid[1] = False                       # a star with no valid label
    valid[0, 0] = True
    y = np.where(valid, rng.normal(size=(n, k)), 0.0)
    y_err = np.where(valid, 0.2 * rng.random((n, k)), 0.0)
    return {"x": rng.normal(size=(n, n_pix)).astype(np.float32), "y": y.astype(np.float32),
            "y_err": y_err.astype(np.float32), "valid": valid}


@pytest.mark.parametrize("label_errors", [True, False])
def test_bcnn_loss_matches_hand_computation(label_errors):
    rng = np.random.default_rng(0)
    model = models.build("bcnn", n_inputs=96, n_outputs=4, num_hidden=[16, 8], l2=1e-3,
                         label_errors=label_errors)
    params = jax.jit(model.init)(jax.random.key(0))
    batch = make_batch(rng, 5, 96, 4)
    out = jax.jit(model.apply)(params, jnp.asarray(batch["x"]))
    value, s = np.asarray(out["value"], np.float64), np.asarray(out["log_var"], np.float64)
    per_star = []
    for i in range(5):
        m = batch["valid"][i]
        var = np.exp(s[i, m]) + (batch["y_err"][i, m] ** 2 if label_errors else 0.0)
        terms = 0.5 * (batch["y"][i, m] - value[i, m]) ** 2 / var + 0.5 * np.log(var)
        per_star.append(terms.sum() / m.sum() if m.any() else 0.0)
    trunk = params["trunk"]
    l2 = 1e-3 * sum(float(np.sum(np.square(trunk[n]["w"])))
                    for n in ("conv1", "conv2", "dense1", "dense2"))
    loss, metrics = jax.jit(model.loss)(params, batch, None)
    np.testing.assert_allclose(float(metrics["nll"]), np.mean(per_star), rtol=1e-5)
    np.testing.assert_allclose(float(loss), np.mean(per_star) + l2, rtol=1e-5)


@pytest.mark.parametrize("family", ["bcnn", "bcnn_censored"])
def test_extreme_log_variance_heads_keep_loss_and_gradients_finite(family):
    """A raw log-variance of -200 would underflow exp() to 0 and make the loss of an exact
    label (label_errors off) infinite; +200 would overflow. The head is bounded."""
    rng = np.random.default_rng(3)
    n_inputs = apogee.N_PIX_GAPLESS if family == "bcnn_censored" else 64
    n_outputs = 22 if family == "bcnn_censored" else 3
    model = models.build(family, n_inputs=n_inputs, n_outputs=n_outputs, label_errors=False,
                         **({} if family == "bcnn_censored" else {"num_hidden": [8, 8]}))
    params = jax.jit(model.init)(jax.random.key(0))
    batch = make_batch(rng, 4, n_inputs, n_outputs)
    for raw in (-200.0, 200.0):
        if family == "bcnn":
            params["log_var"]["b"] = jnp.full(n_outputs, raw)
        else:
            params["trunk_log_var"]["b"] = jnp.full(3, raw)
            for element in params["elements"].values():
                element["head"]["b"] = element["head"]["b"].at[1].set(raw)
        out = jax.jit(model.apply)(params, jnp.asarray(batch["x"]))
        lo, hi = bcnn.LOG_VAR_BOUNDS
        assert np.all((np.asarray(out["log_var"]) >= lo) & (np.asarray(out["log_var"]) <= hi))
        (loss, _), grads = jax.jit(jax.value_and_grad(model.loss, has_aux=True))(
            params, batch, None)
        assert np.isfinite(float(loss))
        assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_bounded_log_variance_is_the_identity_in_the_working_range():
    raw = jnp.linspace(-5.0, 5.0, 101)
    np.testing.assert_allclose(np.asarray(bcnn.bounded_log_var(raw)), np.asarray(raw),
                               atol=1e-5)


def test_masked_labels_change_nothing_and_all_missing_star_is_zero():
    rng = np.random.default_rng(1)
    model = models.build("bcnn", n_inputs=64, n_outputs=3, num_hidden=[8, 8])
    params = jax.jit(model.init)(jax.random.key(1))
    batch = make_batch(rng, 4, 64, 3)
    grad = jax.jit(jax.grad(lambda p, b: model.loss(p, b, jax.random.key(5))[0]))
    loss = jax.jit(model.loss)
    garbage = dict(batch, y=np.where(batch["valid"], batch["y"], 1e30).astype(np.float32),
                   y_err=np.where(batch["valid"], batch["y_err"], 1e20).astype(np.float32))
    np.testing.assert_array_equal(loss(params, batch, None)[0], loss(params, garbage, None)[0])
    g1, g2 = grad(params, batch), grad(params, garbage)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_array_equal(a, b)
    lonely = {k: np.repeat(v[1:2], 4, axis=0) for k, v in garbage.items()}  # all-missing stars
    assert float(loss(params, lonely, None)[1]["nll"]) == 0.0
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grad(params, lonely)))


def test_bcnn_classification_uses_masked_bce():
    model = models.build("bcnn", n_inputs=64, n_outputs=1, kind="classification",
                         num_hidden=[8, 4], l2=0.0)
    params = jax.jit(model.init)(jax.random.key(2))
    assert "log_var" not in params
    x = normal(np.random.default_rng(3), (3, 64))
    batch = {"x": x, "y": jnp.array([[1.0], [0.0], [0.0]]), "y_err": jnp.zeros((3, 1)),
             "valid": jnp.array([[True], [True], [False]])}
    out = jax.jit(model.apply)(params, x)
    p = np.asarray(out["value"][:, 0], np.float64)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-np.asarray(out["logit"][:, 0]))), rtol=1e-6)
    expected = (-np.log(p[0]) - np.log(1 - p[1]) + 0.0) / 3
    np.testing.assert_allclose(float(jax.jit(model.loss)(params, batch, None)[0]), expected,
                               rtol=1e-5)


def test_dropout_follows_the_key():
    model = models.build("bcnn", n_inputs=128, n_outputs=2, num_hidden=[16, 8])
    assert model.stochastic and model.input_norm == "mean"
    params = jax.jit(model.init)(jax.random.key(0))
    x = normal(np.random.default_rng(1), (4, 128))
    apply = jax.jit(model.apply, static_argnames="train")
    off = apply(params, x)
    assert off["value"].shape == off["log_var"].shape == (4, 2)
    np.testing.assert_array_equal(off["value"], apply(params, x, None, train=True)["value"])
    a, b = (apply(params, x, jax.random.key(7))["value"] for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, apply(params, x, jax.random.key(8))["value"])
    assert not np.allclose(a, off["value"])


def test_init_is_the_same_eager_and_jitted():
    model = models.build("bcnn", n_inputs=128, n_outputs=3, num_hidden=[16, 8])
    eager, jitted = model.init(jax.random.key(5)), jax.jit(model.init)(jax.random.key(5))
    jax.tree.map(np.testing.assert_array_equal, eager, jitted)
    assert all(isinstance(a, jax.Array) and a.dtype == jnp.float32
               for a in jax.tree.leaves(eager))
    assert 0.04 < float(jnp.std(eager["trunk"]["dense1"]["w"])) < 0.06   # N(0, 0.05^2)
    assert not np.any(eager["trunk"]["dense1"]["b"])


def test_bcnn_trains_with_the_shared_loop():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(96, 64)).astype(np.float32)
    y = np.stack([x[:, :8].mean(1), x[:, 30:40].mean(1)], 1).astype(np.float32) * 3
    data = {"x": x, "y": y, "y_err": np.zeros_like(y), "valid": np.ones_like(y, bool)}
    tr = {k: v[:64] for k, v in data.items()}
    va = {k: v[64:] for k, v in data.items()}
    model = models.build("bcnn", n_inputs=64, n_outputs=2, num_hidden=[32, 16])
    cfg = train.TrainConfig(learning_rate=3e-3, batch_size=16, max_epochs=4)
    params, history = train.fit(model, tr, va, cfg, jax.random.key(0), log=lambda *_: None)
    assert np.isfinite(history["valid_loss"]).all()
    assert history["valid_loss"].min() < history["valid_loss"].iloc[0]


# ---------------------------------------------------------------- censored

@pytest.fixture(scope="module")
def censored():
    model = models.build("bcnn_censored", n_inputs=apogee.N_PIX_GAPLESS, n_outputs=22,
                         num_hidden=[16, 8, 4, 4, 2])
    return model, jax.jit(model.init)(jax.random.key(0))


def test_censored_rejects_other_label_sets():
    with pytest.raises(ValueError, match="n_outputs=3"):
        models.build("bcnn_censored", n_inputs=apogee.N_PIX_GAPLESS, n_outputs=3)
    with pytest.raises(ValueError, match="no ASPCAP window"):
        models.build("bcnn_censored", n_inputs=apogee.N_PIX_GAPLESS, n_outputs=2,
                     labels=["teff", "dnu"])
    with pytest.raises(ValueError, match="7514"):
        models.build("bcnn_censored", n_inputs=100, n_outputs=22)


def test_censored_label_errors_off_is_the_loss_with_zero_errors(censored):
    model, params = censored
    exact = models.build("bcnn_censored", n_inputs=apogee.N_PIX_GAPLESS, n_outputs=22,
                         num_hidden=[16, 8, 4, 4, 2], label_errors=False)
    batch = make_batch(np.random.default_rng(4), 3, apogee.N_PIX_GAPLESS, 22)
    zero_err = dict(batch, y_err=np.zeros_like(batch["y_err"]))
    off = float(jax.jit(exact.loss)(params, batch, None)[0])
    assert off == pytest.approx(float(jax.jit(model.loss)(params, zero_err, None)[0]), rel=1e-6)
    assert off != pytest.approx(float(jax.jit(model.loss)(params, batch, None)[0]), rel=1e-3)
    with pytest.raises(ValueError, match="label_errors must be true or false"):
        models.build("bcnn", n_inputs=64, n_outputs=2, label_errors="no")


def test_censored_jacobian_stays_in_the_windows(censored):
    model, params = censored
    x = 0.1 * normal(np.random.default_rng(1), (1, apogee.N_PIX_GAPLESS))
    mg = apogee.ASPCAP_LABELS.index("Mg")
    inside = apogee.window_mask("Mg")

    @jax.jit
    def jac(p):
        return jax.grad(lambda xx: model.apply(p, xx)["value"][0, mg])(x)[0]

    full = np.asarray(jac(params))
    assert np.abs(full[~inside]).max() > 0            # the trunk enters through aux
    no_aux = dict(params, aux={"w": jnp.zeros_like(params["aux"]["w"]), "b": params["aux"]["b"]})
    censored_jac = np.asarray(jac(no_aux))
    assert np.all(censored_jac[~inside] == 0.0)
    assert np.abs(censored_jac[inside]).max() > 0
    out = jax.eval_shape(model.apply, params, x)
    assert out["value"].shape == out["log_var"].shape == (1, 22)


def test_element_losses_do_not_train_trunk_heads(censored):
    model, params = censored
    x = normal(np.random.default_rng(2), (2, apogee.N_PIX_GAPLESS))
    elements = [i for i, n in enumerate(apogee.ASPCAP_LABELS) if n not in ("teff", "logg", "Fe")]

    @jax.jit
    def grads(weight):
        def f(p):
            out = model.apply(p, x, jax.random.key(3))
            return jnp.sum(weight * (out["value"] ** 2 + out["log_var"]))
        return jax.grad(f)(params)

    g = grads(jnp.zeros(22).at[jnp.array(elements)].set(1.0))
    for head in ("trunk_value", "trunk_log_var"):
        assert all(np.all(a == 0) for a in jax.tree.leaves(g[head]))
    assert np.abs(g["trunk"]["dense1"]["w"]).max() > 0     # through aux, as in astroNN
    assert np.abs(grads(jnp.zeros(22).at[0].set(1.0))["trunk_value"]["w"]).max() > 0


def test_censored_aux_kernel_respects_maxnorm(censored):
    model, params = censored
    big = dict(params, aux={"w": 10.0 * params["aux"]["w"] + 1.0, "b": params["aux"]["b"]})
    x = normal(np.random.default_rng(4), (1, apogee.N_PIX_GAPLESS))
    # aux is linear in its kernel: scaling the stored kernel beyond the cap changes nothing.
    apply = jax.jit(model.apply)
    a = apply(big, x)["value"]
    b = apply(dict(big, aux={"w": 3.0 * big["aux"]["w"], "b": big["aux"]["b"]}), x)["value"]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- MC inference

@pytest.fixture(scope="module")
def small():
    model = models.build("bcnn", n_inputs=32, n_outputs=3, num_hidden=[8, 4])
    params = jax.jit(model.init)(jax.random.key(0))
    x = normal(np.random.default_rng(1), (5, 32))
    return model, params, x


def test_mc_predict_matches_explicit_samples(small):
    """Sample s of star j is one forward pass of that star alone with the row key
    fold_in(split(key, S)[s], seed_j), seed_j from the star's ID; so a star's result does not
    depend on the batch size or on the other stars."""
    model, params, x = small
    key = jax.random.key(9)
    ids = [f"2M{i:08d}" for i in range(len(x))]
    out = mc_predict(model, params, x, key, mc_samples=7, batch_size=3, ids=ids)
    assert set(out) == {"value", "std_model", "std_predictive", "std_total"}
    apply = jax.jit(model.apply)
    assert all(v.shape == (5, 3) for v in out.values())
    per_sample = jax.random.split(key, 7)
    for j, seed in enumerate(star_seeds(ids)):
        samples = [apply(params, jnp.asarray(x[j:j + 1]), jax.random.fold_in(k, seed)[None])
                   for k in per_sample]
        v = np.stack([np.asarray(s["value"])[0] for s in samples])
        s = np.stack([np.asarray(s["log_var"])[0] for s in samples])
        np.testing.assert_allclose(out["value"][j], v.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["std_model"][j], v.std(0), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(out["std_predictive"][j], np.sqrt(np.exp(s.mean(0))),
                                   rtol=1e-5)
    np.testing.assert_allclose(out["std_total"] ** 2,
                               out["std_model"] ** 2 + out["std_predictive"] ** 2, rtol=1e-5)
    order = np.array([3, 0, 4, 1, 2])
    moved = mc_predict(model, params, x[order], key, mc_samples=7, batch_size=2,
                       ids=[ids[i] for i in order])
    for name in out:
        np.testing.assert_allclose(moved[name], out[name][order], rtol=1e-5, atol=1e-7)
    assert np.all(out["std_model"] > 0)


#: JAX's event for each program lowered to MLIR: every shape that compiles (or loads from the
#: persistent compilation cache) is lowered first.
LOWERED_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"


def test_mc_predict_compiles_one_program_for_any_number_of_stars(small):
    """Chunks of exactly batch_size stars, the last padded: 1, 3 and 5 stars at batch_size 4
    (one chunk, one chunk, a full and a padded one) run one program; another batch_size
    compiles another."""
    model, params, x = small
    key = jax.random.key(9)
    compiled = []
    listener = lambda name, *_, **__: compiled.append(name == LOWERED_EVENT)  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        first = mc_predict(model, params, x[:1], key, mc_samples=3, batch_size=4)
        after_first = sum(compiled)
        for n in (3, 5):
            out = mc_predict(model, params, x[:n], key, mc_samples=3, batch_size=4)
            assert out["value"].shape == (n, 3)
        assert sum(compiled) == after_first > 0
        mc_predict(model, params, x, key, mc_samples=3, batch_size=2)
        assert sum(compiled) > after_first
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    np.testing.assert_allclose(out["value"][:1], first["value"], rtol=1e-5, atol=1e-7)


def test_row_keys_give_each_row_its_own_mask():
    keys = jax.random.split(jax.random.key(3), 4)
    masks = np.asarray(layers.keep_mask(keys, (4, 5000), 0.3, salt=2))
    np.testing.assert_allclose(masks.mean(axis=1), 0.7, atol=0.03)
    alone = np.asarray(layers.keep_mask(keys[2:3], (1, 5000), 0.3, salt=2))
    np.testing.assert_array_equal(masks[2], alone[0])       # a row's mask ignores the others
    assert (masks[0] != masks[1]).mean() > 0.3
    with pytest.raises(ValueError, match="row keys"):
        layers.keep_mask(keys, (3, 10), 0.3, salt=2)


def test_mc_deterministic_mode_and_shared_key(small):
    model, params, x = small
    det = mc_predict(model, params, x, jax.random.PRNGKey(0), mc_samples=0)
    apply = jax.jit(model.apply)
    ref = apply(params, jnp.asarray(x))
    np.testing.assert_allclose(det["value"], ref["value"], rtol=1e-6)
    np.testing.assert_array_equal(det["std_model"], 0.0)
    np.testing.assert_allclose(det["std_predictive"], np.exp(0.5 * np.asarray(ref["log_var"])),
                               rtol=1e-6)
    same = jnp.stack([jax.random.key(4)] * 6)
    moments = jax.jit(lambda p, xx, k: _moments(model, p, xx, k, mc_batch=4))(params, x, same)
    np.testing.assert_allclose(moments["std_model"], 0.0, atol=1e-6)
    np.testing.assert_allclose(moments["value"], apply(params, jnp.asarray(x),
                                                       jax.random.key(4))["value"], rtol=1e-5)


def test_mc_without_log_var_gives_zero_predictive():
    model = models.build("mlp", n_inputs=16, n_outputs=2, hidden=[8], dropout=0.2)
    params = jax.jit(model.init)(jax.random.key(0))
    x = np.ones((3, 16), np.float32)
    out = mc_predict(model, params, x, jax.random.key(1), mc_samples=4)
    np.testing.assert_array_equal(out["std_predictive"], 0.0)
    np.testing.assert_allclose(out["std_total"], out["std_model"], rtol=1e-6)
    with pytest.raises(ValueError, match="mc_predict: x"):
        mc_predict(model, params, x[0], jax.random.key(1))

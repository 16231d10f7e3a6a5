"""Ridge, KNN and MLP families: closed forms, brute force, shapes, gradients, learning."""
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from stargrad import models, train
from stargrad.models.linear import ridge_fit


def ridge_reference(x, y, alpha):
    """Ridge with an unpenalised intercept as one augmented least-squares problem."""
    n, p = x.shape
    a = np.block([[x, np.ones((n, 1))], [np.sqrt(alpha) * np.eye(p), np.zeros((p, 1))]])
    rhs = np.concatenate([y, np.zeros((p, y.shape[1]))])
    sol = np.linalg.lstsq(a, rhs, rcond=None)[0]
    return sol[:-1], sol[-1]


@pytest.mark.parametrize("n", [12, 40])  # fewer and more stars than pixels
def test_ridge_primal_and_dual_match_closed_form(n):
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(n, 20)), rng.normal(size=(n, 2))
    w_ref, b_ref = ridge_reference(x, y, alpha=0.7)
    for solver in ("primal", "dual", "auto"):
        w, b = ridge_fit(x, y, np.ones_like(y, bool), 0.7, solver)
        np.testing.assert_allclose(w, w_ref, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(b, b_ref, rtol=1e-8, atol=1e-10)


def test_ridge_fits_each_label_on_its_valid_rows():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 8)), rng.normal(size=(30, 3))
    valid = np.ones_like(y, bool)
    valid[:7, 0] = False
    valid[20:, 1] = False
    valid[:, 2] = False
    y_garbage = np.where(valid, y, 1e3)
    model = models.build("linear", n_inputs=8, n_outputs=3, alpha=0.5)
    params = model.fit({"x": x.astype(np.float32), "y": y_garbage.astype(np.float32),
                        "valid": valid}, None, None)
    for j in range(2):
        w_ref, b_ref = ridge_reference(x[valid[:, j]], y[valid[:, j], j:j + 1], 0.5)
        np.testing.assert_allclose(params["w"][:, j], w_ref[:, 0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(params["b"][j], b_ref[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(params["w"][:, 2], 0.0)  # no valid star: predict the mean
    out = model.apply(params, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(out["value"], x @ params["w"] + params["b"], rtol=1e-5, atol=1e-5)


def knn_reference(train_x, train_y, train_valid, queries, k, weights):
    out = np.zeros((len(queries), train_y.shape[1]))
    for i, q in enumerate(queries):
        dist = np.sqrt(((train_x - q) ** 2).sum(axis=1))
        near = np.argsort(dist)[:k]
        if weights == "uniform":
            w = np.ones(k)
        elif (dist[near] == 0).any():
            w = (dist[near] == 0).astype(float)
        else:
            w = 1.0 / dist[near]
        for j in range(train_y.shape[1]):
            wj = w * train_valid[near, j]
            out[i, j] = (wj * train_y[near, j]).sum() / wj.sum() if wj.sum() > 0 else 0.0
    return out


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_knn_equals_brute_force(weights):
    rng = np.random.default_rng(2)
    train_x = rng.normal(size=(60, 6)).astype(np.float32)
    train_y = rng.normal(size=(60, 3)).astype(np.float32)
    valid = rng.random((60, 3)) > 0.3
    valid[:, 2] = False
    valid[:3, 2] = True  # most queries have no neighbour with a valid label 2
    queries = rng.normal(size=(23, 6)).astype(np.float32)
    queries[5] = train_x[10]  # an exact match takes all the distance weight
    model = models.build("knn", n_inputs=6, n_outputs=3, k=5, weights=weights, chunk=7)
    params = model.fit({"x": train_x, "y": np.where(valid, train_y, -9999.0), "valid": valid},
                       None, None)
    got = model.apply(params, jnp.asarray(queries))["value"]
    want = knn_reference(train_x, train_y, valid, queries, 5, weights)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_mlp_seed_architectures():
    key = jax.random.key(0)
    x = jax.ShapeDtypeStruct((3, 7514), jnp.float32)
    cases = [({"hidden": [32], "kind": "classification"}, [(7514, 32), (32, 1)]),
             ({"hidden": [8, 4, 2]}, [(7514, 8), (8, 4), (4, 2), (2, 1)]),
             ({"hidden": [512, 256, 128]}, [(7514, 512), (512, 256), (256, 128), (128, 1)])]
    for hyper, shapes in cases:
        model = models.build("mlp", n_inputs=7514, n_outputs=1, **hyper)
        params = jax.eval_shape(model.init, key)
        assert [layer["w"].shape for layer in params["dense"]] == shapes
        out = jax.eval_shape(model.apply, params, x)
        assert {k: v.shape for k, v in out.items()} == (
            {"value": (3, 1), "logit": (3, 1)} if "kind" in hyper else {"value": (3, 1)})
    clf = models.build("mlp", n_inputs=7514, n_outputs=1, kind="classification", hidden=[32])
    out = jax.jit(clf.apply)(clf.init(key), jax.random.normal(key, (3, 7514)))
    np.testing.assert_allclose(out["value"], jax.nn.sigmoid(out["logit"]), rtol=1e-6)


def test_mlp_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        model = models.build("mlp", n_inputs=4, n_outputs=2, hidden=[3], activation="tanh",
                             l2=0.01)
        params = model.init(jax.random.key(1))
        rng = np.random.default_rng(3)
        batch = {"x": rng.normal(size=(5, 4)), "y": rng.normal(size=(5, 2)),
                 "valid": np.array([[1, 1], [1, 0], [0, 0], [1, 1], [0, 1]], bool)}
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        loss_of = jax.jit(jax.vmap(lambda v: model.loss(unravel(v), batch, None)[0]))
        analytic = jax.flatten_util.ravel_pytree(
            jax.grad(lambda p: model.loss(p, batch, None)[0])(params))[0]
        steps = 1e-6 * np.eye(flat.size)
        numeric = (loss_of(flat + steps) - loss_of(flat - steps)) / 2e-6
        assert flat.dtype == jnp.float64 and flat.size == 4 * 3 + 3 + 3 * 2 + 2
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_mlp_dropout_only_with_a_key():
    model = models.build("mlp", n_inputs=5, n_outputs=2, hidden=[16], dropout=0.5)
    assert model.stochastic
    params = model.init(jax.random.key(0))
    x = jnp.ones((4, 5))
    deterministic = jax.jit(lambda p: model.apply(p, x)["value"])
    np.testing.assert_array_equal(deterministic(params), deterministic(params))
    stochastic = jax.jit(lambda p, k: model.apply(p, x, k)["value"])
    a, b = stochastic(params, jax.random.key(1)), stochastic(params, jax.random.key(2))
    assert not np.allclose(a, b)


@pytest.mark.parametrize("family,hyper", [("linear", {}), ("knn", {"k": 3}),
                                          ("mlp", {"hidden": [4]})])
def test_classification_output_is_a_probability(family, hyper):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20, 6)).astype(np.float32) * 5
    y = (x[:, :1] > 0).astype(np.float32)
    model = models.build(family, n_inputs=6, n_outputs=1, kind="classification", **hyper)
    params = (model.fit({"x": x, "y": y, "valid": np.ones_like(y, bool)}, None, None)
              if model.fit else model.init(jax.random.key(0)))
    out = model.apply(params, jnp.asarray(x * 10))
    assert np.all((out["value"] >= 0) & (out["value"] <= 1))
    assert np.all(np.isfinite(out["logit"]))


def nonlinear_problem(n=300, p=50, seed=5):
    """Spectra-like data: 3 latent labels -> 50 noisy features; targets nonlinear in them."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    x = np.tanh(z @ rng.normal(size=(3, p))) + 0.05 * rng.normal(size=(n, p))
    y = np.stack([np.sin(1.5 * z[:, 0]) + 0.3 * z[:, 1], z[:, 1] * z[:, 2] + z[:, 0]], axis=1)
    y = (y - y.mean(0)) / y.std(0) + 0.05 * rng.normal(size=y.shape)
    batch = {"x": ((x - x.mean(0)) / x.std(0)).astype(np.float32), "y": y.astype(np.float32),
             "y_err": np.full(y.shape, 0.05, np.float32), "valid": np.ones(y.shape, bool)}
    return ({k: a[:240] for k, a in batch.items()}, {k: a[240:] for k, a in batch.items()})


@pytest.mark.parametrize("family,hyper", [("linear", {"alpha": 1.0}), ("knn", {"k": 5}),
                                          ("mlp", {"hidden": [32], "activation": "tanh"})])
def test_each_family_beats_the_mean(family, hyper):
    tr, va = nonlinear_problem()
    model = models.build(family, n_inputs=50, n_outputs=2, **hyper)
    cfg = train.TrainConfig(learning_rate=3e-3, batch_size=32, max_epochs=25)
    params, history = train.fit(model, tr, va, cfg, jax.random.key(0), log=lambda s: None)
    pred = np.asarray(model.apply(params, jnp.asarray(va["x"]))["value"])
    mse = np.mean((pred - va["y"]) ** 2)
    baseline = np.mean((tr["y"].mean(0) - va["y"]) ** 2)
    assert mse < 0.6 * baseline, (family, mse, baseline)
    np.testing.assert_allclose(history["valid_loss"].min(), mse, rtol=1e-4)


def test_traits_read_from_source_are_each_familys_declaration(monkeypatch, tmp_path):
    """`models.traits` reads TRAITS without importing the family (the workflow's parse inside a
    cluster job stays free of JAX); what it reads is what the imported module declares, and a
    declaration it cannot read is an error naming the module."""
    import importlib

    for family in models.families():
        declared = importlib.import_module(f"stargrad.models.{family}").TRAITS
        assert models.traits(family) == declared, family
    (tmp_path / "odd.py").write_text("SUPERVISED = False\nTRAITS = Traits(supervised=SUPERVISED)\n")
    monkeypatch.setattr(models, "__path__", [str(tmp_path)])
    monkeypatch.setattr(models, "families", lambda: ("odd",))
    with pytest.raises(TypeError, match=r"stargrad\.models\.odd must declare TRAITS"):
        models.traits("odd")
    with pytest.raises(ValueError, match="unknown model family 'even'"):
        models.traits("even")

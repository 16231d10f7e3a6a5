"""Masked losses, the generic training loop (schedule, early stopping, determinism, resume)
and pickle-free parameter files."""
import math
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stargrad import losses, models, train
from stargrad.pipeline.job import walltime_s
from stargrad.models import Model
from stargrad.params_io import ParamsFileError, load_params, save_params

QUIET = {"log": lambda s: None}


# ---------------------------------------------------------------- losses

@pytest.mark.parametrize("loss_fn", [losses.masked_mse, losses.masked_bce_with_logits])
def test_masked_label_never_changes_loss_or_gradient(loss_fn):
    pred = jnp.array([[0.3, -1.2, 2.0], [0.5, 0.1, -0.4]])
    y = jnp.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    valid = jnp.array([[True, False, True], [True, True, False]])
    value_grad = jax.value_and_grad(loss_fn)
    base = value_grad(pred, y, valid)
    for junk in (1e6, -9999.0, jnp.nan):
        changed = y.at[0, 1].set(junk).at[1, 2].set(junk)
        other = value_grad(pred, changed, valid)
        assert float(other[0]) == float(base[0])
        np.testing.assert_array_equal(other[1], base[1])
    assert np.all(base[1][~np.asarray(valid)] == 0)


def test_all_missing_star_contributes_zero():
    pred = jnp.array([[1.0, 2.0], [5.0, 5.0], [0.0, 1.0]])
    y = jnp.zeros((3, 2))
    valid = jnp.array([[True, True], [False, False], [True, False]])
    value, grad = jax.value_and_grad(losses.masked_mse)(pred, y, valid)
    assert float(value) == pytest.approx(((1 + 4) / 2 + 0 + 0) / 3)
    assert np.all(np.isfinite(grad)) and np.all(grad[1] == 0)


def test_losses_match_hand_computed_values():
    valid = jnp.array([[True, True, False], [False, True, True]])
    pred = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    y = jnp.array([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    # star 0: (0 + 4) / 2 = 2; star 1: (1 + 1) / 2 = 1; batch mean 1.5
    assert float(losses.masked_mse(pred, y, valid)) == pytest.approx(1.5)
    logit = jnp.array([[0.0, math.log(3.0)]])
    # -log(sigmoid(0)) = log 2; -log(1 - sigmoid(log 3)) = log 4
    bce = losses.masked_bce_with_logits(logit, jnp.array([[1.0, 0.0]]), jnp.ones((1, 2), bool))
    assert float(bce) == pytest.approx(1.5 * math.log(2.0), rel=1e-6)


# ---------------------------------------------------------------- toy models and data

def scalar_model(start=0.0):
    """One parameter w predicting every label; loss = per-star masked MSE of w."""
    def apply(params, x, key=None, train=False, x_err=None):
        return {"value": jnp.broadcast_to(params["w"], (x.shape[0], 1))}

    def loss(params, batch, key):
        return losses.label_loss(apply(params, batch["x"]), batch, "regression")

    return Model(init=lambda key: {"w": jnp.asarray(start)}, apply=apply, loss=loss)


def constant_batch(n, value):
    return {"x": np.zeros((n, 2), np.float32), "y": np.full((n, 1), value, np.float32),
            "y_err": np.zeros((n, 1), np.float32), "valid": np.ones((n, 1), bool)}


def regression_data(seed=0, n_train=70, n_valid=30, p=6):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_train + n_valid, p)).astype(np.float32)
    y = np.tanh(x[:, :2] @ np.array([[1.0, -0.5], [0.5, 1.0]], np.float32))
    valid = rng.random(y.shape) > 0.2
    batch = {"x": x, "y": np.where(valid, y, 0).astype(np.float32),
             "y_err": np.full(y.shape, 0.1, np.float32), "valid": valid}
    return ({k: a[:n_train] for k, a in batch.items()}, {k: a[n_train:] for k, a in batch.items()})


def dropout_mlp():
    return models.build("mlp", n_inputs=6, n_outputs=2, hidden=[8], dropout=0.2)


# ---------------------------------------------------------------- schedule and loop

def test_plateau_halves_learning_rate_after_patience():
    cfg = train.TrainConfig(learning_rate=1e-3, plateau_patience=2, plateau_min_delta=0.01,
                            min_learning_rate=2e-4, early_stopping_patience=None)
    sched = train._fresh_schedule(cfg)
    # 0.895 improves by less than min_delta: counts as a plateau epoch
    lrs = []
    for epoch, loss in enumerate([1.0, 0.9, 0.895, 0.9, 0.9, 0.9, 0.8, 0.9, 0.9, 0.9, 0.9], 1):
        lrs.append(sched["lr"])
        sched, _ = train._schedule_step(sched, loss, epoch, cfg)
    assert lrs == [1e-3, 1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 2.5e-4, 2e-4, 2e-4]


def test_fit_reduces_learning_rate_on_a_flat_validation_loss():
    cfg = train.TrainConfig(learning_rate=1e-2, batch_size=8, max_epochs=7, plateau_patience=2,
                            early_stopping_patience=None)
    # the validation target is far away and w moves towards the training target 0 it sits at:
    # the validation loss never improves after epoch 1
    _, history = train.fit(scalar_model(0.0), constant_batch(16, 0.0), constant_batch(8, 5.0),
                           cfg, jax.random.key(0), **QUIET)
    np.testing.assert_allclose(history["learning_rate"],
                               [1e-2, 1e-2, 1e-2, 5e-3, 5e-3, 2.5e-3, 2.5e-3])


def test_early_stopping_restores_best_params():
    # training pulls w from 0 towards 3; the validation loss (w - 1)^2 is best near w = 1
    cfg = train.TrainConfig(learning_rate=0.3, batch_size=10, max_epochs=30,
                            early_stopping_patience=2, plateau_patience=10)
    tr, va = constant_batch(10, 3.0), constant_batch(5, 1.0)
    params, history = train.fit(scalar_model(), tr, va, cfg, jax.random.key(0), **QUIET)
    best = int(history["valid_loss"].idxmin())
    assert len(history) == best + 1 + 2 < 30
    assert float((params["w"] - 1.0) ** 2) == pytest.approx(history["valid_loss"].min(), rel=1e-6)
    shorter = train.TrainConfig(**{**cfg.to_dict(), "max_epochs": best + 1})
    same, _ = train.fit(scalar_model(), tr, va, shorter, jax.random.key(0), **QUIET)
    assert float(same["w"]) == float(params["w"])


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_steps_are_plain_gradient_descent(momentum):
    """One batch per epoch on the scalar model: loss (w - 3)², gradient 2(w - 3). Plain SGD
    moves w by -lr·g; heavy-ball momentum accumulates v ← μ v + g, w ← w - lr·v."""
    lr, epochs = 0.1, 3
    cfg = train.TrainConfig(optimizer="sgd", learning_rate=lr, momentum=momentum,
                            batch_size=10, max_epochs=epochs, early_stopping_patience=None,
                            plateau_patience=10)
    params, _ = train.fit(scalar_model(0.0), constant_batch(10, 3.0), constant_batch(5, 3.0),
                          cfg, jax.random.key(0), **QUIET)
    w, v = 0.0, 0.0
    for _ in range(epochs):
        v = momentum * v + 2 * (w - 3.0)
        w -= lr * v
    assert float(params["w"]) == pytest.approx(w, rel=1e-6)
    with pytest.raises(ValueError, match="momentum"):
        train.TrainConfig(optimizer="adam", momentum=0.9)


def test_class_accuracy_is_the_recall_of_each_class():
    prob = jnp.array([[0.9], [0.2], [0.7], [0.4], [0.6]])
    y = jnp.array([[1.0], [1.0], [0.0], [0.0], [1.0]])
    valid = jnp.array([[True], [True], [True], [True], [False]])
    _, metrics = losses.label_loss({"value": prob, "logit": jnp.log(prob / (1 - prob))},
                                   {"y": y, "valid": valid}, "classification")
    assert float(metrics["accuracy_1"]) == pytest.approx(0.5)     # 1 of the 2 valid class-1
    assert float(metrics["accuracy_0"]) == pytest.approx(0.5)     # 1 of the 2 class-0
    # the overall metric is a per-star mean in which a star without a label counts 0 (2 / 5)
    assert float(metrics["accuracy"]) == pytest.approx(0.4)


def test_drop_last_skips_the_partial_batch():
    # Adam's first steps move w by ~lr each: 70 stars in batches of 32 -> 2 or 3 steps
    cfg = dict(learning_rate=0.1, batch_size=32, max_epochs=1)
    moved = {}
    for drop_last in (True, False):
        params, _ = train.fit(scalar_model(), constant_batch(70, 3.0), constant_batch(4, 3.0),
                              train.TrainConfig(**cfg, drop_last=drop_last), 0, **QUIET)
        moved[drop_last] = float(params["w"])
    assert moved[True] == pytest.approx(0.2, abs=0.02)
    assert moved[False] == pytest.approx(0.3, abs=0.03)



def test_fit_makes_as_many_programs_for_many_layers_as_for_one():
    """Initialisation, optimizer state and batching run as fixed programs: an MLP of 7 layers
    of distinct shapes makes no more XLA programs than one of 2 (each eager jnp call on a new
    shape would compile a program of its own, seconds for the censored BCNN's ~100 arrays)."""
    from jax import monitoring
    traced = []
    monitoring.register_event_duration_secs_listener(
        lambda event, _, **kw: traced.append(kw.get("fun_name"))
        if event == "/jax/core/compile/jaxpr_trace_duration" else None)
    tr, va = regression_data(seed=5, n_train=77, n_valid=21, p=5)   # shapes of no other test
    cfg = train.TrainConfig(learning_rate=1e-3, batch_size=16, max_epochs=2)
    programs = {}
    for hidden in ([7], [9], [9, 10, 11, 12, 13, 14]):     # the first compiles the shared ones
        before = len(traced)
        train.fit(models.build("mlp", n_inputs=5, n_outputs=2, hidden=hidden), tr, va, cfg, 0,
                  **QUIET)
        programs[len(hidden)] = traced[before:]
    assert len(programs[6]) == len(programs[1]), programs


RESUME_CFG = train.TrainConfig(batch_size=16, max_epochs=4, learning_rate=3e-2, plateau_patience=1)


@pytest.fixture(scope="module")
def four_epochs():
    """An uninterrupted 4-epoch run of a dropout MLP (key 3)."""
    tr, va = regression_data()
    return train.fit(dropout_mlp(), tr, va, RESUME_CFG, jax.random.key(3), **QUIET)


def test_same_seed_gives_identical_params(four_epochs):
    tr, va = regression_data()
    again, _ = train.fit(dropout_mlp(), tr, va, RESUME_CFG, jax.random.key(3), **QUIET)
    for a, b in zip(jax.tree.leaves(four_epochs[0]), jax.tree.leaves(again)):
        np.testing.assert_array_equal(a, b)


def test_interrupted_run_resumes_to_the_same_result(four_epochs, tmp_path):
    tr, va = regression_data()
    whole, whole_hist = four_epochs
    first_two = train.TrainConfig(**{**RESUME_CFG.to_dict(), "max_epochs": 2})
    train.fit(dropout_mlp(), tr, va, first_two, jax.random.key(3), checkpoint_dir=tmp_path, **QUIET)
    lines = []
    resumed, resumed_hist = train.fit(dropout_mlp(), tr, va, RESUME_CFG, jax.random.key(3),
                                      checkpoint_dir=tmp_path, log=lines.append)
    assert any("resuming" in line for line in lines)
    assert sum(line.startswith("epoch ") for line in lines) == 2  # only epochs 3 and 4 ran
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    columns = [c for c in whole_hist.columns if c != "seconds"]
    assert list(resumed_hist.columns) == list(whole_hist.columns)
    assert list(resumed_hist["epoch"]) == [1, 2, 3, 4]
    np.testing.assert_array_equal(whole_hist[columns].to_numpy(), resumed_hist[columns].to_numpy())
    other = train.TrainConfig(**{**RESUME_CFG.to_dict(), "learning_rate": 1.0})
    with pytest.raises(ValueError, match="learning_rate"):
        train.fit(dropout_mlp(), tr, va, other, jax.random.key(3), checkpoint_dir=tmp_path, **QUIET)
    with pytest.raises(ValueError, match="different key"):
        train.fit(dropout_mlp(), tr, va, RESUME_CFG, jax.random.key(4), checkpoint_dir=tmp_path,
                  **QUIET)


def test_time_budget_stops_with_a_checkpoint_and_retries_resume_to_the_same_result(
        four_epochs, tmp_path):
    """A budget too short for two epochs: each call runs one epoch, saves and stops; calling
    again (as Snakemake's retry does) resumes, and the fourth call returns what an
    uninterrupted run returns, whatever checkpoint_every says."""
    tr, va = regression_data()
    whole, whole_hist = four_epochs
    tight = train.TrainConfig(**{**RESUME_CFG.to_dict(), "time_budget_s": 1e-3,
                                 "checkpoint_every": 3})
    attempts, lines = 0, []
    while True:
        attempts += 1
        try:
            resumed, hist = train.fit(dropout_mlp(), tr, va, tight, jax.random.key(3),
                                      checkpoint_dir=tmp_path, log=lines.append)
            break
        except train.TimeBudgetExceeded as stop:
            assert "the next attempt resumes" in str(stop)
            assert (tmp_path / train.CHECKPOINT_NAME).exists()
        assert attempts < 10
    assert attempts == 4
    assert [line.split(" after epoch ")[1] for line in lines if "resuming" in line] == \
        ["1", "2", "3"]
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    columns = [c for c in whole_hist.columns if c != "seconds"]
    np.testing.assert_array_equal(whole_hist[columns].to_numpy(), hist[columns].to_numpy())


def test_a_checkpoint_refuses_other_data_of_the_same_shape(tmp_path):
    """A train.fits rebuilt with the same shape after a failed attempt (a compile or mock edit):
    the checkpoint fitted to the old data is refused, never resumed."""
    tr, va = regression_data()
    tight = train.TrainConfig(**{**RESUME_CFG.to_dict(), "time_budget_s": 1e-3})
    with pytest.raises(train.TimeBudgetExceeded):
        train.fit(dropout_mlp(), tr, va, tight, jax.random.key(3), checkpoint_dir=tmp_path, **QUIET)
    for which, data in (("train", tr), ("valid", va)):
        edited = {**data, "y": data["y"].copy()}
        edited["y"][0, 0] += 0.5
        pair = (edited, va) if which == "train" else (tr, edited)
        with pytest.raises(ValueError, match="different training data"):
            train.fit(dropout_mlp(), *pair, RESUME_CFG, jax.random.key(3),
                      checkpoint_dir=tmp_path, **QUIET)
    lines = []
    train.fit(dropout_mlp(), tr, va, RESUME_CFG, jax.random.key(3), checkpoint_dir=tmp_path,
              log=lines.append)
    assert any("resuming" in line for line in lines)


def test_walltime_counts_from_the_job_start(tmp_path):
    """The deadline is the job's start plus its walltime less the margin, passed down to the
    loop: a job that began long enough ago stops after its first epoch, one that began now
    trains to the end."""
    from stargrad.stages.train import WALLTIME_MARGIN, walltime_deadline

    assert walltime_deadline(None, 5.0) is None
    assert walltime_deadline(100.0, 5.0) == pytest.approx(5.0 + 100.0 * (1 - WALLTIME_MARGIN))
    tr, va = regression_data()
    began_long_ago = walltime_deadline(100.0, time.monotonic() - 95.0)
    with pytest.raises(train.TimeBudgetExceeded, match="walltime"):
        train.fit(dropout_mlp(), tr, va, RESUME_CFG, jax.random.key(3), checkpoint_dir=tmp_path,
                  deadline=began_long_ago, **QUIET)
    _, history = train.fit(dropout_mlp(), tr, va, RESUME_CFG, jax.random.key(3),
                           checkpoint_dir=tmp_path / "now",
                           deadline=walltime_deadline(100.0, time.monotonic()), **QUIET)
    assert list(history["epoch"]) == [1, 2, 3, 4]


def test_walltime_applies_only_to_jobs_of_the_slurm_executor(monkeypatch):
    """Inside an salloc allocation SLURM_JOB_ID is set, but a local run is not stopped at the
    rule's runtime: only the executor's job step (resource walltime_limited=1) has a walltime."""
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    job = types.SimpleNamespace(resources=types.SimpleNamespace(runtime=10, walltime_limited=0))
    assert walltime_s(job) is None
    job.resources.walltime_limited = 1
    assert walltime_s(job) == 600.0


def test_closed_form_family_gets_one_history_row():
    tr, va = regression_data()
    model = models.build("linear", n_inputs=6, n_outputs=2)
    params, history = train.fit(model, tr, va, train.TrainConfig(batch_size=16), 0, **QUIET)
    assert len(history) == 1
    direct = float(model.loss(params, va, None)[0])
    assert history["valid_loss"][0] == pytest.approx(direct, rel=1e-5)


def test_bad_inputs_give_clear_errors():
    tr, va = regression_data()
    cfg = train.TrainConfig(max_epochs=1)
    model = dropout_mlp()
    bad_x = {**tr, "x": tr["x"].copy()}
    bad_x["x"][3, 2] = np.nan
    with pytest.raises(ValueError, match=r"train\['x'\] has 1 NaN"):
        train.fit(model, bad_x, va, cfg, 0, **QUIET)
    with pytest.raises(TypeError, match=r"valid\['valid'\] must be bool"):
        train.fit(model, tr, {**va, "valid": va["valid"].astype(int)}, cfg, 0, **QUIET)
    with pytest.raises(ValueError, match=r"train\['y_err'\] has shape"):
        train.fit(model, {**tr, "y_err": tr["y_err"][:, :1]}, va, cfg, 0, **QUIET)
    with pytest.raises(ValueError, match="lacks valid"):
        train.fit(model, {k: v for k, v in tr.items() if k != "valid"}, va, cfg, 0, **QUIET)
    for wrong in (lambda p, b, k: model.loss(p, b, k)[0],                 # no metrics
                  lambda p, b, k: (model.loss(p, b, k)[0] * jnp.ones(2), {}),   # not a scalar
                  lambda p, b, k: (model.loss(p, b, k)[0], {"loss": 0.0})):     # a metric 'loss'
        with pytest.raises(TypeError, match=r"model.loss must return \(scalar, \{name: scalar"):
            train.fit(model._replace(loss=wrong), tr, va, cfg, 0, **QUIET)


def test_train_config_from_dict():
    cfg = train.TrainConfig.from_dict({"learning_rate": "5e-4", "batch_size": 32.0,
                                       "early_stopping_patience": None})
    assert (cfg.learning_rate, cfg.batch_size, cfg.early_stopping_patience) == (5e-4, 32, None)
    with pytest.raises(ValueError, match="unknown training option.*'lr'"):
        train.TrainConfig.from_dict({"lr": 1e-3})
    with pytest.raises(ValueError, match="plateau_factor"):
        train.TrainConfig(plateau_factor=1.5)
    with pytest.raises(ValueError, match="batch_size must be int"):
        train.TrainConfig(batch_size=3.5)


# ---------------------------------------------------------------- params_io

def test_params_round_trip(tmp_path):
    params = {"dense": [{"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3)},
                        {"w": jnp.ones((3, 1)), "b": jnp.array([0.5])}],
              "scale": np.float32(2.0), "pair": (np.int32(3), np.array([True, False])),
              "empty": []}
    path = tmp_path / "params.npz"
    save_params(path, params)
    back = load_params(path)
    assert isinstance(back["dense"], list) and isinstance(back["pair"], tuple)
    assert back["empty"] == []
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
        assert isinstance(b, np.ndarray) and b.dtype == np.asarray(a).dtype
        np.testing.assert_array_equal(a, b)
    with np.load(path, allow_pickle=False) as npz:
        assert "dense/1/w" in npz.files
    first = path.read_bytes()
    save_params(path, params)
    assert path.read_bytes() == first  # no timestamps inside
    assert [p.name for p in tmp_path.iterdir()] == ["params.npz"]  # no temporary left behind


def test_corrupt_or_missing_params_file(tmp_path):
    path = tmp_path / "params.npz"
    save_params(path, {"w": np.ones(100)})
    path.write_bytes(path.read_bytes()[:150])
    with pytest.raises(ParamsFileError, match="params.npz: corrupt"):
        load_params(path)
    path.write_bytes(b"not an archive at all")
    with pytest.raises(ParamsFileError, match="params.npz"):
        load_params(path)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_params(tmp_path / "missing.npz")

"""The shared χ² solver: a linear model's fit is weighted least squares, bounds hold, a star that
cannot converge is flagged (not fatal), and the implicit derivative equals differentiating the
unrolled iterations."""
import jax
import jax.numpy as jnp
import numpy as np

from stargrad import solver

N_PIXELS, N_LABELS = 40, 3
RNG = np.random.default_rng(0)
OFFSET = RNG.normal(1.0, 0.1, N_PIXELS).astype(np.float32)
SLOPES = RNG.normal(0.0, 0.3, (N_PIXELS, N_LABELS)).astype(np.float32)
SLOPES[:, 0] *= 100.0               # labels constrained on very different scales, as Teff vs dex


def linear_flux(labels):
    return jnp.asarray(OFFSET) + jnp.asarray(SLOPES) @ labels


def curved_flux(labels):
    """A nonlinear model: line depths that saturate in the labels."""
    return 1.0 - 0.5 * jnp.tanh(jnp.asarray(SLOPES) @ labels + 0.3) ** 2


def stars(flux_fn, n, seed, noise=0.01):
    rng = np.random.default_rng(seed)
    labels = rng.normal(0.0, 0.3, (n, N_LABELS)).astype(np.float32)
    labels[:, 0] *= 0.01
    sigma = rng.uniform(0.5, 2.0, (n, N_PIXELS)).astype(np.float32) * noise
    x = np.stack([np.asarray(flux_fn(jnp.asarray(t))) for t in labels])
    x = (x + rng.normal(size=x.shape) * sigma).astype(np.float32)
    return labels, x, (1.0 / sigma ** 2).astype(np.float32)


def fit(flux_fn, x, inv_var, starts, **options):
    options = {"n_iter": 20, **options}
    out = jax.jit(lambda x, w, s: solver.fit_stars(flux_fn, x, w, s, **options))(
        x, inv_var, starts)
    return {name: np.asarray(value) for name, value in out.items()}


def test_linear_model_fit_is_weighted_least_squares():
    _, x, inv_var = stars(linear_flux, 5, seed=1)
    inv_var[0, :10] = 0.0                                   # masked pixels
    starts = np.zeros((5, 2, N_LABELS), np.float32)
    starts[:, 1] = [0.05, 1.0, -1.0]
    out = fit(linear_flux, x, inv_var, starts)
    a = SLOPES.astype(np.float64)
    for i in range(5):
        w = inv_var[i].astype(np.float64)
        fisher = a.T @ (a * w[:, None])
        wls = np.linalg.solve(fisher, a.T @ (w * (x[i] - OFFSET)))
        formal = np.sqrt(np.diag(np.linalg.inv(fisher)))
        assert np.all(np.abs(out["value"][i] - wls) < 1e-3 * formal + 1e-4 * np.abs(wls))
        np.testing.assert_allclose(out["covariance"][i], np.linalg.inv(fisher), rtol=1e-3,
                                   atol=1e-12)
        resid = x[i] - OFFSET - a @ wls
        np.testing.assert_allclose(out["chi2"][i], resid @ (w * resid), rtol=1e-3)
    assert np.all(out["converged"])


def test_prior_pulls_an_unconstrained_label_to_its_mean_with_error_tau():
    _, x, inv_var = stars(linear_flux, 2, seed=2)
    blind = lambda t: linear_flux(t * jnp.array([1.0, 1.0, 0.0]))  # noqa: E731
    out = fit(blind, x, inv_var, np.zeros((2, 1, N_LABELS), np.float32),
              prior_prec=1.0 / 4.0 ** 2, prior_mean=jnp.array([0.0, 0.0, 0.5]))
    np.testing.assert_allclose(out["value"][:, 2], 0.5, atol=1e-5)
    np.testing.assert_allclose(np.sqrt(out["covariance"][:, 2, 2]), 4.0, rtol=1e-4)


def test_labels_stay_inside_the_bounds():
    labels, x, inv_var = stars(curved_flux, 4, seed=3)
    upper = np.array([1.0, 1.0, 1.0], np.float32)
    lower = np.array([-1.0, -1.0, labels[:, 2].max() + 0.1], np.float32)  # truth outside
    out = fit(curved_flux, x, inv_var, np.zeros((4, 1, N_LABELS), np.float32),
              lower=lower, upper=upper)
    assert np.all(out["value"] >= lower - 1e-7) and np.all(out["value"] <= upper + 1e-7)
    np.testing.assert_allclose(out["value"][:, 2], lower[2], atol=1e-6)
    assert np.all(out["converged"])        # held at the bound, optimal inside the box


def test_star_that_cannot_converge_is_flagged_not_fatal():
    labels, x, inv_var = stars(curved_flux, 3, seed=4)
    x[1, 5] = np.nan                                    # a broken spectrum
    starts = np.zeros((3, 1, N_LABELS), np.float32)
    out = fit(curved_flux, x, inv_var, starts)
    assert out["converged"].tolist() == [True, False, True]
    assert np.all(np.isfinite(out["value"][[0, 2]]))
    # too few iterations from a far start: not converged, and said so
    far = np.tile(np.array([[0.3, -2.0, 2.0]], np.float32), (3, 1, 1))
    x[1, 5] = x[0, 5]
    short = fit(curved_flux, x, inv_var, far, n_iter=1)
    assert not np.any(short["converged"])
    assert np.all(fit(curved_flux, x, inv_var, starts, n_iter=40)["converged"])


def test_several_starts_keep_the_least_chi2():
    labels, x, inv_var = stars(curved_flux, 1, seed=5)
    bad = np.array([0.5, 3.0, -3.0], np.float32)
    good = labels[0]
    one = fit(curved_flux, x, inv_var, bad[None, None], n_iter=3)
    both = fit(curved_flux, x, inv_var, np.stack([bad, good])[None], n_iter=3)
    assert both["chi2"][0] < one["chi2"][0]
    np.testing.assert_allclose(both["value"][0], good, atol=0.05)
    # polishing goes on from the better start only: one iteration each, then 30 from the best
    polished = fit(curved_flux, x, inv_var, np.stack([bad, good])[None], n_iter=1, n_polish=30)
    assert polished["converged"][0]
    np.testing.assert_allclose(polished["value"][0], fit(curved_flux, x, inv_var, good[None, None],
                                                         n_iter=31)["value"][0], atol=1e-4)


def test_iterations_return_the_terms_at_their_labels_for_the_next_ones_to_start_from():
    labels, x, inv_var = stars(curved_flux, 1, seed=9)
    objective = solver.flux_objective(curved_flux, jnp.asarray(x[0]), jnp.asarray(inv_var[0]))
    free = jnp.ones(N_LABELS, bool)
    starts = jnp.asarray(np.stack([labels[0] + 0.2, labels[0] - 0.3]))
    best, terms = solver.best_of_starts(objective, starts, free, 2)
    for got, want in zip(terms, objective(best)):       # not the other start's, not a trial's
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # going on from the terms at the labels is going on from the labels: the same steps
    given = solver.levenberg_marquardt(objective, best, free, 3, terms=objective(best))
    evaluated = solver.levenberg_marquardt(objective, best, free, 3)
    for got, want in zip(jax.tree.leaves(given), jax.tree.leaves(evaluated)):
        np.testing.assert_array_equal(got, want)
    far = solver.levenberg_marquardt(objective, best, free, 3, terms=objective(starts[0]))
    assert not np.allclose(far[0], evaluated[0], rtol=1e-3)    # the terms are what it starts from


def readout_model(seed: int):
    """A read-out model f = Θ v(ℓ): tanh features of the labels and a constant, random Θ;
    returns (Θ, v, f)."""
    rng = np.random.default_rng(seed)
    mix = jnp.asarray(rng.normal(0.0, 1.0, (6, N_LABELS)), jnp.float32)
    theta = jnp.asarray(rng.normal(0.0, 0.3, (N_PIXELS, 7)), jnp.float32)

    def features(labels):
        return jnp.concatenate([jnp.tanh(mix @ labels), jnp.ones(1)])

    return theta, features, lambda labels: theta @ features(labels)


def test_readout_objective_equals_the_flux_objective():
    """A read-out model f = Θ v(ℓ) (tanh features of the labels and a constant): the objective
    built from ΘᵀWΘ gives the same value, Gauss-Newton matrix and gradient as the one built
    from the flux's Jacobian, and the fits with either agree."""
    theta, features, flux = readout_model(9)

    labels, x, inv_var = stars(flux, 3, seed=10, noise=0.02)
    at = jnp.asarray(labels[0] + 0.1)
    for k in range(3):
        gram = solver.weighted_gram(theta, jnp.asarray(inv_var[k]), chunk=16)
        want = theta.T @ (theta * inv_var[k][:, None])
        np.testing.assert_allclose(gram, want, atol=1e-6 * float(jnp.abs(want).max()))
        readout = solver.readout_objective(theta, gram, features, x[k], inv_var[k], 0.5, 0.1)
        plain = solver.flux_objective(flux, x[k], inv_var[k], 0.5, 0.1)
        for a, b in zip(readout(at), plain(at)):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-3 * float(jnp.abs(b).max()))
    starts = labels[:, None] + 0.05
    by_readout = jax.jit(jax.vmap(lambda xs, ws, ss: solver.fit_star(
        flux, xs, ws, ss, n_iter=20, objective=solver.readout_objective(
            theta, solver.weighted_gram(theta, ws), features, xs, ws))["value"]))(
        x, inv_var, starts)
    np.testing.assert_allclose(by_readout, fit(flux, x, inv_var, starts)["value"], atol=1e-4)


def test_readout_steps_from_an_approximate_gram_reach_the_exact_optimum():
    """Iterations whose H comes from another weighting's Gram (a typical one, scaled, as the
    Payne's test step uses) end where the exact ones do, because value and gradient are the
    star's own; the summary from the exact objective then gives the exact covariance and
    convergence. With a Gram that far from the star's, the same few iterations do not get there
    (the steps depend on H, the optimum does not)."""
    theta, features, flux = readout_model(11)

    labels, x, inv_var = stars(flux, 3, seed=12, noise=0.02)
    inv_var[1, :8] = 0.0                                     # masked pixels, not in the typical
    typical = np.median(inv_var, axis=0)
    starts = labels[:, None] + 0.2
    exact = fit(flux, x, inv_var, starts, n_iter=30)

    def approximate(n_iter, gram_factor):
        def one(xs, ws, ss):
            gram = solver.weighted_gram(theta, jnp.asarray(typical)) * gram_factor
            scale = jnp.sum(ws) / jnp.sum(typical)
            labels = solver.solve_star(
                flux, xs, ws, ss, n_iter=n_iter,
                objective=solver.readout_objective(theta, scale * gram, features, xs, ws))
            return solver.fit_summary(solver.flux_objective(flux, xs, ws)(labels), labels)
        return {k: np.asarray(v) for k, v in jax.jit(jax.vmap(one))(x, inv_var, starts).items()}

    approx = approximate(30, 1.0)
    np.testing.assert_allclose(approx["value"], exact["value"], atol=1e-4)
    np.testing.assert_allclose(approx["covariance"], exact["covariance"], rtol=1e-3, atol=1e-9)
    np.testing.assert_allclose(approx["chi2"], exact["chi2"], rtol=1e-4)
    assert approx["converged"].all()
    # H 1000× too large: the steps are too short to arrive, and the exact test says so
    slow = approximate(3, 1000.0)
    assert not slow["converged"].any()
    assert np.abs(slow["value"] - exact["value"]).max() > 1e-2


def test_chord_polish_keeps_value_and_gradient_exact_and_reaches_the_optimum():
    """The chord objective returns the H it is given at every labels, with the value and
    gradient of the full one; a polish of chord iterations from the best start's H ends where
    the full iterations do, and differs from them on the way."""
    theta, features, flux = readout_model(13)
    labels, x, inv_var = stars(flux, 3, seed=14, noise=0.02)
    gram = solver.weighted_gram(theta, jnp.asarray(inv_var[0]))
    full = solver.readout_objective(theta, gram, features, x[0], inv_var[0], 0.5, 0.1)
    fixed = jnp.asarray(np.diag([3.0, 2.0, 1.0]), jnp.float32)
    chord = solver.readout_objective(theta, gram, features, x[0], inv_var[0], 0.5, 0.1, h=fixed)
    for at in (labels[0], labels[0] + 0.3):
        want, got = full(jnp.asarray(at)), chord(jnp.asarray(at))
        np.testing.assert_array_equal(got[1], fixed)
        for k in (0, 3):
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5,
                                       atol=1e-5 * float(jnp.abs(want[k]).max()))

    def solve(n_polish, chord_polish):
        def one(xs, ws, ss):
            gram = solver.weighted_gram(theta, ws)
            objective = solver.readout_objective(theta, gram, features, xs, ws)
            polish = (lambda terms: solver.readout_objective(theta, gram, features, xs, ws,
                                                             h=terms[1])) if chord_polish else None
            return solver.solve_star(flux, xs, ws, ss, n_iter=2, n_polish=n_polish,
                                     objective=objective, polish_objective=polish)
        return np.asarray(jax.jit(jax.vmap(one))(x, inv_var, labels[:, None] + 0.2))

    np.testing.assert_allclose(solve(30, True), solve(30, False), atol=1e-4)
    # its first step is the full one's (same H, same g); the next ones keep the old H
    np.testing.assert_array_equal(solve(1, True), solve(1, False))
    assert not np.array_equal(solve(3, True), solve(3, False))


def test_implicit_jacobian_equals_unrolled():
    """d label / d flux through the optimality condition = jax.jacrev through the iterations,
    on a nonlinear model with a misfit (the Newton matrix then differs from Gauss-Newton)."""
    labels, x, inv_var = stars(curved_flux, 2, seed=6, noise=0.03)
    starts = labels[:, None] + 0.02

    def jacobians(implicit):
        def value(xs, ws, ss):
            return solver.fit_star(curved_flux, xs, ws, ss, n_iter=40, implicit=implicit,
                                   prior_prec=0.01)["value"]
        return np.asarray(jax.jit(jax.vmap(jax.jacrev(value)))(x, inv_var, starts))

    implicit, unrolled = jacobians(True), jacobians(False)
    assert implicit.shape == (2, N_LABELS, N_PIXELS)
    np.testing.assert_allclose(implicit, unrolled, atol=2e-3 * np.abs(implicit).max())
    # and differs from the Gauss-Newton (zero-residual) estimator by the misfit's curvature
    out = fit(curved_flux, x, inv_var, starts, n_iter=30, prior_prec=0.01)
    a = np.asarray(jax.jacfwd(curved_flux)(jnp.asarray(out["value"][0])), np.float64)
    w = inv_var[0].astype(np.float64)
    gauss_newton = np.linalg.solve(a.T @ (a * w[:, None]) + 0.01 * np.eye(N_LABELS), a.T * w)
    assert not np.allclose(implicit[0], gauss_newton, atol=1e-3 * np.abs(implicit).max())


def test_small_dense_algebra_matches_lapack_and_needs_a_pivot():
    """`solve_linear` against numpy in float64 on matrices that need row exchanges (a zero
    leading entry, indefinite, odd and even sizes); `floored_cholesky` and `lower_inverse`
    reconstruct h and invert its factor; `covariance` of a badly scaled h is h⁻¹, and of a
    singular h finite and positive, large along the direction the matrix leaves free."""
    rng = np.random.default_rng(11)
    for k in (1, 2, 5, 22, 23):
        a = rng.normal(size=(k, k)).astype(np.float32)
        a[0, 0] = 0.0 if k > 1 else a[0, 0]
        b = rng.normal(size=k).astype(np.float32)
        expected = np.linalg.solve(a.astype(np.float64), b)
        np.testing.assert_allclose(solver.solve_linear(jnp.asarray(a), jnp.asarray(b)), expected,
                                   atol=1e-4 * np.abs(expected).max() * np.linalg.cond(a) ** 0.5)
        m = rng.normal(size=(k, k))
        h = (m @ m.T + 0.1 * np.eye(k)).astype(np.float32)
        d = np.sqrt(np.diagonal(h))
        unit = h / np.outer(d, d)
        low = np.asarray(solver.floored_cholesky(jnp.asarray(unit), solver.PIVOT_FLOOR), np.float64)
        np.testing.assert_array_equal(np.triu(low, 1), 0.0)
        np.testing.assert_allclose(low @ low.T, unit, atol=1e-5)
        np.testing.assert_allclose(np.asarray(solver.lower_inverse(jnp.asarray(low)), np.float64)
                                   @ low, np.eye(k), atol=1e-4 * np.linalg.cond(low))
        scale = np.exp(rng.uniform(-5, 5, k)).astype(np.float32)
        np.testing.assert_allclose(solver.covariance(jnp.asarray(h * np.outer(scale, scale))),
                                   np.linalg.inv(h.astype(np.float64)) / np.outer(scale, scale),
                                   rtol=2e-3, atol=0)
    # rank 3 of 5 (labels 3 and 4 copies of 0 and 1): finite, positive, the copies nearly free
    m = rng.normal(size=(5, 3))
    m[3], m[4] = m[0], m[1]
    singular = np.asarray(solver.covariance(jnp.asarray((m @ m.T).astype(np.float32))))
    assert np.all(np.isfinite(singular)) and np.all(np.diagonal(singular) > 0)
    scaled = np.diagonal(singular) * np.diagonal(m @ m.T)      # in units of the unit diagonal
    assert scaled[3:].min() > 1e5, scaled


def test_a_batch_of_fits_calls_no_lapack():
    """Two batched LAPACK kernels run at once deadlock XLA's CPU thread pool (module docstring):
    the compiled batch of fits — iterations, covariance, convergence test, implicit derivative —
    contains no LAPACK call."""
    labels, x, inv_var = stars(curved_flux, 4, seed=12)

    def batch(x, w, s):
        return jax.jacrev(lambda x: solver.fit_stars(curved_flux, x, w, s, n_iter=3)["value"])(x)

    # the lowered program (a compiled one may come from the persistent cache without its text)
    assert "lapack" not in jax.jit(batch).lower(x, inv_var, labels[:, None]).as_text().lower()
    assert "lapack" in jax.jit(jax.vmap(jnp.linalg.solve)).lower(
        jnp.ones((2, 3, 3)), jnp.ones((2, 3, 1))).as_text().lower()

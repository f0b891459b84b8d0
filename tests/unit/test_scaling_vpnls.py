"""Variable projection (VPNLS) for Approach 3: exact NNLS, recovery, engine="vp" against the 4,500-start grid."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import nnls

from raylm.scaling.data import ScalingData
from raylm.scaling.fit.approach3 import fit_approach3
from raylm.scaling.fit.objective import objective
from raylm.scaling.fit.vpnls import FLOOR, fit_vpnls, nnls3, profile_point, theta_row, vp_profile, vp_starts
from raylm.scaling.io import read_csv
from raylm.scaling.laws import BESIROGLU_2024, HOFFMANN_2022, ChinchillaLaw
from raylm.scaling.synthetic import synthetic_isoflop

REPO = Path(__file__).resolve().parents[2]
SYNTHETIC_CSV = REPO / "jobs" / "data" / "synthetic_isoflop.csv"
LADDER_DIRS = (REPO / "jobs" / "data" / "ladders", Path("/work/shared/data/ladders"))
BUDGETS = (1e18, 1e19, 1e20, 1e21, 1e22)

# fit_approach3(data, starts="full", engine="batched") on each public ladder (experiment): objective, E, alpha,
# beta. Pinned because the 4,500-start grid takes about 6 s a ladder; the live comparison runs on the synthetic
# CSV below. "misfitting<=5 budgets" is the misfitting ladder cut to its 5 smallest budgets: a degenerate fit
# whose relative-least-squares optimum has E = 0 (the case the lifted VP starts are for).
BATCHED_FULL = {
    "ml_scalefit__massivetext__chinchilla": (0.0005792621908166306, 1.8722337748192637, 0.3776956955017835,
                                             0.3927811051808027),
    "llama_3__exp_loss": (0.00025454504198057094, 1.8274826411396274, 0.3266788700871449, 0.3654301552537627),
    "llama_3__raw_loss": (0.0003904678460047062, 0.5941934044878595, 0.2835172411593556, 0.31565624876632126),
    "misfitting__fineweb_c4__transformer": (0.001729641755484779, 2.691553012582576, 0.6102097337183126,
                                            0.7047876468317413),
    "misfitting<=5 budgets": (0.0003199056684005981, 0.18474709503206435, 2.1156390033143273, 0.21642375588630322),
}


@pytest.fixture(scope="module")
def ladders() -> dict[str, ScalingData]:
    """Every experiment of the public ladders, plus the misfitting ladder cut to its 5 smallest budgets."""
    folder = next((d for d in LADDER_DIRS if d.is_dir() and any(d.glob("*.csv"))), None)
    if folder is None:
        pytest.skip("the public ladders (jobs/data/ladders or /work/shared/data/ladders) are not here")
    out = {}
    for path in sorted(folder.glob("*.csv")):
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        for name in sorted({row["experiment"] for row in rows}):
            runs = [row for row in rows if row["experiment"] == name]
            out[name] = _data(runs)
            if name.startswith("misfitting"):
                budgets = sorted({float(row["budget"]) for row in runs})
                out["misfitting<=5 budgets"] = _data([row for row in runs if float(row["budget"]) <= budgets[4]])
    return out


def _data(runs: list[dict]) -> ScalingData:
    return ScalingData.from_arrays(*([float(row[c]) for row in runs] for c in ("params", "tokens", "loss")))


def test_nnls3_equals_scipy_nnls_including_clamped_coefficients():
    rng = np.random.default_rng(0)
    u = rng.standard_normal((400, 9, 3)) * rng.uniform(0.1, 10.0, size=(400, 1, 3))
    y = rng.standard_normal((400, 9))
    y[:50] = np.einsum("kij,kj->ki", u[:50], rng.uniform(0.5, 2.0, size=(50, 3)))  # interior optimum
    coef, sse = nnls3(np.einsum("kni,knj->kij", u, u), np.einsum("kni,kn->ki", u, y), np.einsum("kn,kn->k", y, y))
    reference = np.array([nnls(u[k], y[k])[0] for k in range(400)])
    np.testing.assert_allclose(coef, reference, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(sse, np.sum((y - np.einsum("kni,ki->kn", u, reference)) ** 2, axis=1),
                               rtol=1e-9, atol=1e-12)
    zeros = np.sum(reference == 0.0, axis=1)
    assert np.sum(zeros == 0) >= 50 and np.sum(zeros == 1) > 50 and np.sum(zeros == 2) > 20 and np.sum(zeros == 3) > 5


def test_profile_grid_equals_the_pointwise_solve_and_scipy_nnls():
    data = synthetic_isoflop(BESIROGLU_2024, BUDGETS, per_budget=7, noise=0.01, seed=2)
    logs = (data.log.log_n, data.log.log_d, data.loss)
    alphas, betas = np.array([0.05, 0.3, 0.9, 2.4]), np.array([0.1, 0.35, 1.7])
    sse, e, a, b = vp_profile(*logs, alphas, betas)
    assert sse.shape == e.shape == (4, 3)
    for i, j in np.ndindex(4, 3):
        value, coef = profile_point(*logs, alphas[i], betas[j])
        columns = [np.ones(len(data)), data.params ** -alphas[i], data.tokens ** -betas[j]]
        _, norm = nnls(np.stack(columns, axis=1) / data.loss[:, None], np.ones(len(data)))
        assert value == pytest.approx(norm**2, rel=1e-9)
        assert sse[i, j] == pytest.approx(value, rel=1e-7, abs=1e-14)
        np.testing.assert_allclose([e[i, j], a[i, j], b[i, j]], coef, rtol=1e-6, atol=1e-9 * max(coef.max(), 1))
        assert min(e[i, j], a[i, j], b[i, j]) >= 0.0


@pytest.mark.parametrize("law", [BESIROGLU_2024, HOFFMANN_2022, ChinchillaLaw(E=0.5, A=2000.0, B=50.0, alpha=0.6,
                                                                              beta=0.2)])
def test_noise_free_law_is_recovered(law):
    data = synthetic_isoflop(law, BUDGETS, per_budget=7, noise=0.0)
    theta, sse = fit_vpnls(data)
    assert sse < 1e-20
    np.testing.assert_allclose(theta, law.log_params, rtol=1e-8)
    fit = fit_approach3(data, engine="vp")
    assert fit.objective < 1e-25 and fit.n_starts == 1
    np.testing.assert_allclose(fit.theta, law.log_params, rtol=1e-10)


def test_zero_coefficients_are_floored_and_lifted_for_the_huber_fit(ladders):
    row = theta_row(np.array([0.0, 5.0, 7.0]), 0.4, 0.3)
    np.testing.assert_allclose(row, [np.log(5.0), np.log(7.0), np.log(FLOOR), 0.4, 0.3])
    starts = vp_starts(ladders["misfitting<=5 budgets"])
    assert starts.shape == (2, 5) and starts[0, 2] == pytest.approx(np.log(FLOOR))  # E = 0, then E revived
    assert np.log(FLOOR) < starts[1, 2] < 0 and np.array_equal(starts[0, [0, 1, 3, 4]], starts[1, [0, 1, 3, 4]])


def test_vp_engine_matches_the_full_grid_on_the_synthetic_csv():
    data = read_csv(SYNTHETIC_CSV)
    grid = fit_approach3(data, starts="full", engine="batched")
    vp = fit_approach3(data, engine="vp")
    assert vp.objective == pytest.approx(grid.objective, rel=1e-6)
    for name in ("E", "A", "B", "alpha", "beta"):
        assert getattr(vp.law, name) == pytest.approx(getattr(grid.law, name), rel=1e-4), name
    assert 1 <= vp.n_starts <= 10 and vp.start_objectives.shape == (vp.n_starts,)
    assert vp.objective == pytest.approx(vp.start_objectives.min()) and vp.local_optima.shape[1] == 5
    assert any(np.array_equal(vp.best_start, row) for row in vp_starts(data))


def test_vp_engine_matches_the_full_grid_on_every_public_ladder(ladders):
    assert set(ladders) == set(BATCHED_FULL)
    for name, data in ladders.items():
        f_ref, e_ref, alpha_ref, beta_ref = BATCHED_FULL[name]
        fit = fit_approach3(data, engine="vp")
        assert fit.objective <= f_ref * (1 + 1e-6), name  # never worse than the 4,500-start grid
        assert fit.objective == pytest.approx(f_ref, rel=1e-6), name
        assert fit.law.E == pytest.approx(e_ref, rel=1e-3), name
        assert fit.law.alpha == pytest.approx(alpha_ref, rel=1e-3), name
        assert fit.law.beta == pytest.approx(beta_ref, rel=1e-3), name


def test_vp_engine_takes_extra_starts_and_bootstraps():
    data = synthetic_isoflop(BESIROGLU_2024, BUDGETS, per_budget=9, noise=0.005, seed=1)
    extra = np.array([[6.0, 7.0, 0.5, 0.3, 0.3], [5.0, 8.0, 0.4, 0.4, 0.4]])
    fit = fit_approach3(data, starts=extra, engine="vp", bootstrap=40, seed=3)
    assert fit.n_starts == len(vp_starts(data)) + 2
    assert fit.objective <= objective(extra, data.log, 1e-3).min()
    assert fit.bootstrap.n_ok == 40
    lo, hi = fit.bootstrap.intervals()["alpha"]
    assert lo < BESIROGLU_2024.alpha < hi

"""PNG plots of a scaling study (matplotlib, Agg; no pyplot state).

- IsoFLOP profiles with their parabolas and minima (Hoffmann et al. 2022, Figure 3 left);
- N*(C) and D*(C): Approach 2 minima and power laws, the Approach 3 closed form, extrapolation
  to the target budgets and interval bands (Figure 3 centre and right; Besiroglu et al. 2024, Figure 3);
- loss contours of the fitted law over (N, D) with the runs and the efficient frontier (Figure 4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from raylm.scaling.data import ScalingData
from raylm.scaling.fit.approach2 import Approach2Fit, group_budgets
from raylm.scaling.fit.approach3 import Approach3Fit
from raylm.scaling.laws import ChinchillaLaw
from raylm.scaling.predict.approaches import bootstrap_bands


def new_figure(width: float, height: float, ncols: int = 1):
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def save_figure(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def plot_isoflops(data: ScalingData, path, approach2: Approach2Fit | None = None) -> Path:
    """Loss against N for each budget, with the fitted parabola and its minimum when available."""
    fig, ax = new_figure(7, 4.5)
    if approach2 is not None:
        groups = [(s.budget, s.params, s.loss, s) for s in approach2.slices]
    else:
        labels, budgets = group_budgets(data.flops)
        groups = [(c, data.params[labels == k], data.loss[labels == k], None) for k, c in enumerate(budgets)]
    budgets = np.array([g[0] for g in groups])
    norm = LogNorm(budgets.min(), budgets.max() * 1.0001)
    colors = colormaps["viridis"]
    for budget, params, loss, fit in groups:
        color = colors(norm(budget))
        ax.scatter(params, loss, color=color, s=14, label=f"{budget:.1e}")
        if fit is not None and fit.coeffs is not None:
            x = np.linspace(np.log(params.min()), np.log(params.max()), 100)
            ax.plot(np.exp(x), np.polyval(fit.coeffs, x), color=color, lw=1, ls="-" if fit.used else ":")
            if fit.used:
                ax.scatter([fit.n_opt], [fit.loss_opt], color=color, marker="*", s=120, edgecolor="k", zorder=3)
    ax.set(xscale="log", xlabel="parameters N", ylabel="loss",
           title="IsoFLOP profiles (stars: parabola minima; dotted: budget not used)")
    if len(groups) <= 20:
        ax.legend(title="budget C (FLOPs)", fontsize=7, ncol=2)
    return save_figure(fig, path)


def plot_optimal_allocation(
    path, *, approach2: Approach2Fit | None = None, approach3: Approach3Fit | None = None, targets=()
) -> Path:
    """N*(C) and D*(C) from both approaches, extrapolated to ``targets``, with interval bands."""
    fig, (ax_n, ax_d) = new_figure(11, 4.5, ncols=2)
    c_data = np.array([s.budget for s in approach2.slices]) if approach2 else np.array([])
    c_all = np.concatenate([c_data, np.asarray(list(targets), dtype=float)])
    if c_all.size == 0:
        c_all = np.array([1e18, 1e22])
    c = np.geomspace(c_all.min() / 2, c_all.max() * 2, 200)
    if approach3 is not None:
        law = approach3.law
        for ax, values, key in ((ax_n, law.optimal_params(c), "n_opt"), (ax_d, law.optimal_tokens(c), "d_opt")):
            ax.plot(c, values, color="C0", label=f"Approach 3 ({_exponent_label(law, key)})")
            if approach3.bootstrap is not None:
                lo, hi = bootstrap_bands(approach3, c)[key]
                ax.fill_between(c, lo, hi, color="C0", alpha=0.2, lw=0)
    if approach2 is not None:
        _plot_approach2(ax_n, ax_d, approach2, c, c_data)
    # Chinchilla's rule of thumb, D = 20 N (Hoffmann et al. 2022, Table 3), for reference
    ax_n.plot(c, np.sqrt(c / (6 * 20)), color="grey", ls="-.", lw=1, label="20 tokens per parameter")
    ax_d.plot(c, 20 * np.sqrt(c / (6 * 20)), color="grey", ls="-.", lw=1, label="20 tokens per parameter")
    for ax, name in ((ax_n, "N* (parameters)"), (ax_d, "D* (tokens)")):
        for target in targets:
            ax.axvline(target, color="grey", ls=":", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel=name)
        ax.legend(fontsize=8)
    ax_n.set_title("compute-optimal model size")
    ax_d.set_title("compute-optimal tokens (dotted: target budgets)")
    return save_figure(fig, path)


def _plot_approach2(ax_n, ax_d, fit: Approach2Fit, c: np.ndarray, c_data: np.ndarray) -> None:
    used = [s for s in fit.slices if s.used]
    inside = (c >= c_data.min()) & (c <= c_data.max())
    boot = fit.bootstrap_predictions(c)
    for i, (ax, power_law, points) in enumerate(((ax_n, fit.n_opt_law, [s.n_opt for s in used]),
                                                 (ax_d, fit.d_opt_law, [s.d_opt for s in used]))):
        ax.scatter([s.budget for s in used], points, color="C1", zorder=3, label="IsoFLOP minima")
        y = power_law(c)
        ax.plot(c[inside], y[inside], color="C1", label=f"Approach 2 (exponent {power_law.exponent:.3f})")
        ax.plot(c, y, color="C1", ls="--", lw=1)
        if boot is not None:
            lo, hi = np.nanpercentile(boot[i], [50 * (1 - fit.level), 100 - 50 * (1 - fit.level)], axis=0)
        else:
            lo, hi = power_law.confidence_band(c, fit.level)
        if np.all(np.isfinite(lo)):
            ax.fill_between(c, lo, hi, color="C1", alpha=0.2, lw=0)


def _exponent_label(law: ChinchillaLaw, key: str) -> str:
    return f"a={law.a:.3f}" if key == "n_opt" else f"b={law.b:.3f}"


def plot_loss_contours(data: ScalingData, law: ChinchillaLaw, path, targets=()) -> Path:
    """Contours of L(N, D) over the runs' range, the runs coloured by loss, and the efficient frontier."""
    fig, ax = new_figure(7, 5.5)
    c_all = np.concatenate([data.flops, np.asarray(list(targets), dtype=float)])
    n_range = np.concatenate([data.params, law.optimal_params(c_all)])
    d_range = np.concatenate([data.tokens, law.optimal_tokens(c_all)])
    n = np.geomspace(n_range.min() / 2, n_range.max() * 2, 200)
    d = np.geomspace(d_range.min() / 2, d_range.max() * 2, 200)
    nn, dd = np.meshgrid(n, d)
    surface = law.loss(nn, dd)
    norm = Normalize(np.percentile(surface, 1), np.percentile(surface, 99))
    contours = ax.contourf(nn, dd, surface, levels=30, cmap="viridis_r", norm=norm, extend="both")
    fig.colorbar(contours, ax=ax, label="fitted loss L(N, D)")
    ax.scatter(data.params, data.tokens, c=data.loss, cmap="viridis_r", norm=norm, edgecolor="k", s=18,
               label="runs, filled with measured loss (blend in where the fit is good)")
    c = np.geomspace(c_all.min() / 2, c_all.max() * 2, 100)
    ax.plot(law.optimal_params(c), law.optimal_tokens(c), color="red", label="efficient frontier N*(C), D*(C)")
    for budget in targets:
        ax.scatter([law.optimal_params(budget)], [law.optimal_tokens(budget)], color="red", marker="*", s=150,
                   edgecolor="k", zorder=3)
    ax.set(xscale="log", yscale="log", xlim=(n[0], n[-1]), ylim=(d[0], d[-1]), xlabel="parameters N",
           ylabel="tokens D", title=f"L = {law.E:.3g} + {law.A:.4g}/N^{law.alpha:.3f} + {law.B:.4g}/D^{law.beta:.3f}")
    ax.legend(fontsize=8, loc="upper right")
    return save_figure(fig, path)


def write_plots(
    out_dir, data: ScalingData, *, approach2: Approach2Fit | None = None, approach3: Approach3Fit | None = None,
    targets=(),
) -> list[Path]:
    """All plots the fits allow, as PNG files in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    paths = [plot_isoflops(data, out / "isoflops.png", approach2)]
    if approach2 is not None or approach3 is not None:
        paths.append(plot_optimal_allocation(out / "optimal_allocation.png", approach2=approach2,
                                             approach3=approach3, targets=targets))
    if approach3 is not None:
        paths.append(plot_loss_contours(data, approach3.law, out / "loss_contours.png", targets))
    return paths


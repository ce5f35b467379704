"""IsoFLOP and compute-optimal frontier figure of a fitted L(N, D) (matplotlib, optional).

Drawn on a ``matplotlib.figure.Figure`` without pyplot (no global state, no GUI backend).
Importing this module does not import matplotlib; the functions raise ImportError when it is
missing.
"""

from __future__ import annotations

import numpy as np

from ..core.scaling import compute_optimal_allocation


def scaling_law_figure(fit, N, D, loss, *, budgets=(), level: float = 0.9, n_curves: int = 6):
    """Two panels: IsoFLOP curves with the frontier, and N_opt / D_opt against compute.

    Left: the law's loss (nats) against model size N (parameters) along each budget
    C = 6 N D (FLOPs), log-spaced over the data's compute range plus every requested budget;
    a dot marks each curve's minimum and a dashed line joins them (the compute-optimal
    frontier); the runs are drawn coloured by their own log10 C. Right: N_opt (parameters)
    and D_opt (tokens) against C, with the bootstrap band at ``level`` when the fit has
    bootstrap draws, and the runs' (C, N) and (C, D).
    """
    from matplotlib import cm, colors
    from matplotlib.figure import Figure

    N = np.asarray(N, float)
    D = np.asarray(D, float)
    loss = np.asarray(loss, float)
    C = 6.0 * N * D
    budgets = [float(b) for b in budgets]
    lo_c, hi_c = float(C.min()), float(C.max())
    grid_c = list(np.logspace(np.log10(lo_c), np.log10(hi_c), n_curves)) if hi_c > lo_c else [lo_c]
    all_c = sorted(set(grid_c) | set(budgets))
    cmin, cmax = min(all_c + [lo_c]), max(all_c + [hi_c])
    norm = colors.LogNorm(vmin=cmin, vmax=cmax if cmax > cmin else cmin * 10)
    cmap = cm.viridis

    fig = Figure(figsize=(11.0, 4.4), dpi=100)
    fig.set_layout_engine("constrained")
    ax, ax2 = fig.subplots(1, 2)

    n_lo = min(N.min(), *(fit.compute_optimal(c)[0] for c in all_c)) / 4
    n_hi = max(N.max(), *(fit.compute_optimal(c)[0] for c in all_c)) * 4
    ns = np.logspace(np.log10(n_lo), np.log10(n_hi), 200)
    front_n, front_l = [], []
    for c in all_c:
        ds = c / (6.0 * ns)
        ax.plot(ns, fit.predict(ns, ds), color=cmap(norm(c)), lw=1.5 if c in budgets else 1.0,
                ls="-" if c not in budgets else (0, (4, 1)))
        n_opt, d_opt = fit.compute_optimal(c)
        front_n.append(n_opt)
        front_l.append(fit.predict(n_opt, d_opt))
    ax.plot(front_n, front_l, "k--", lw=1, label="compute-optimal frontier")
    ax.scatter(front_n, front_l, c="k", s=14, zorder=3)
    sc = ax.scatter(N, loss, c=C, cmap=cmap, norm=norm, s=12, edgecolors="none", alpha=0.8,
                    label="runs")
    ax.set_xscale("log")
    ax.set_xlabel("model size N (parameters)")
    ax.set_ylabel("loss (nats)")
    ax.set_title("IsoFLOP curves of the fitted law")
    lmin, lmax = float(np.nanmin(front_l + list(loss))), float(np.nanmax(loss))
    ax.set_ylim(lmin - 0.05 * (lmax - lmin), lmax + 0.05 * (lmax - lmin))
    ax.legend(loc="upper right", fontsize=8)
    fig.colorbar(sc, ax=ax, label="compute C = 6ND (FLOPs)")

    cs = np.logspace(np.log10(cmin) - 0.5, np.log10(cmax) + 0.5, 100)
    n_opt, d_opt = fit.compute_optimal(cs)
    ax2.plot(cs, n_opt, color="C0", label="N_opt (parameters)")
    ax2.plot(cs, d_opt, color="C1", label="D_opt (tokens)")
    if fit.bootstrap_params is not None and len(fit.bootstrap_params):

        nb, db = compute_optimal_allocation(np.asarray(fit.bootstrap_params, float), cs)
        q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
        for vals, color in ((nb, "C0"), (db, "C1")):
            lo, hi = np.nanpercentile(vals, q, axis=0)
            ax2.fill_between(cs, lo, hi, color=color, alpha=0.2, lw=0)
    ax2.scatter(C, N, s=6, color="C0", alpha=0.4)
    ax2.scatter(C, D, s=6, color="C1", alpha=0.4)
    for b in budgets:
        ax2.axvline(b, color="0.5", lw=0.8, ls=":")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("compute C (FLOPs)")
    ax2.set_ylabel("parameters / tokens")
    title = "compute-optimal allocation"
    if fit.bootstrap_params is not None and len(fit.bootstrap_params):
        title += f" ({int(round(level * 100))}% bootstrap band)"
    ax2.set_title(title)
    ax2.legend(loc="upper left", fontsize=8)
    return fig


def plot_scaling_law(fit, N, D, loss, path: str, **kwargs) -> None:
    """Write :func:`scaling_law_figure` to ``path`` as a PNG file."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = scaling_law_figure(fit, N, D, loss, **kwargs)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png")

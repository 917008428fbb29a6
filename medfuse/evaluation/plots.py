# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Report figures (PNG): ROC and PR curves with bootstrap bands, reliability diagram, confusion matrix,
entropy histogram, risk-coverage curve, gallery of the most uncertain cases.

Drawn with matplotlib's ``Figure`` and Agg canvas: no pyplot, no change of the global backend,
safe in headless runs and in threads. Every function writes one PNG and returns its path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "curve_bands",
    "plot_roc",
    "plot_pr",
    "plot_reliability",
    "plot_confusion",
    "plot_entropy",
    "plot_risk_coverage",
    "plot_gallery",
]

_GRID = np.linspace(0.0, 1.0, 101)


def _figure(w: float = 5.0, h: float = 4.4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike, tight: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, bbox_inches="tight", pad_inches=0.08)  # "tight": the legends below the axes stay in the picture
    return path


def _legend_below(ax, source=None, columns: int = 1) -> None:
    """The legend of ``source``'s lines (default ``ax``'s) under ``ax`` (below its x label), where it cannot cover a
    curve or a point."""
    handles, labels = (source or ax).get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16 if source is None else -0.45),
                  fontsize=8, ncol=columns, frameon=False)


def _roc_at_grid(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, s)
    return np.interp(_GRID, fpr, tpr)


def _pr_at_grid(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    from sklearn.metrics import precision_recall_curve

    prec, rec, _ = precision_recall_curve(y, s)
    # step interpolation: the best precision reachable at recall >= r (monotone envelope)
    order = np.argsort(rec)
    rec, prec = rec[order], np.maximum.accumulate(prec[order][::-1])[::-1]
    idx = np.clip(np.searchsorted(rec, _GRID, side="left"), 0, len(rec) - 1)
    return prec[idx]


def curve_bands(targets: np.ndarray, scores: np.ndarray, idx: np.ndarray | None, kind: str = "roc") -> dict | None:
    """Curve on a 101-point grid with the 2.5 / 97.5 percentile band over bootstrap resamples ``idx``.

    ROC: TPR at FPR = grid; PR: interpolated precision at recall = grid. ``None`` when undefined.
    """
    y = np.asarray(targets).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.sum() == 0 or (kind == "roc" and (~y).sum() == 0):
        return None
    fn = _roc_at_grid if kind == "roc" else _pr_at_grid
    main = fn(y, s)
    out = {"grid": _GRID.tolist(), "curve": main.tolist(), "low": None, "high": None}
    if idx is not None and len(idx):
        curves = np.stack([fn(y[i], s[i]) for i in idx if y[i].any() and (kind != "roc" or (~y[i]).any())])
        out["low"], out["high"] = (np.percentile(curves, q, axis=0).tolist() for q in (2.5, 97.5))
    return out


def _curve_plot(curves: Mapping[str, dict], path, kind: str, title: str, labels: Mapping[str, str], prevalence=None) -> Path:
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray"]
    for k, (name, c) in enumerate(curves.items()):
        if c is None:
            continue
        col = colors[k % len(colors)]
        x, yv = np.asarray(c["grid"]), np.asarray(c["curve"])
        ax.plot(x, yv, color=col, lw=2, label=labels.get(name, name))
        if c.get("low") is not None:
            ax.fill_between(x, c["low"], c["high"], color=col, alpha=0.18, lw=0)
    if kind == "roc":
        ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="chance (a random model)")
        ax.set_xlabel("1 - specificity (false-positive rate)")
        ax.set_ylabel("sensitivity (true-positive rate)")
    else:
        for name, prev in (prevalence or {}).items():
            ax.axhline(prev, ls=":", color="0.6", lw=1, label=f"{name}: prevalence {prev:.2f} (a random model)")
        ax.set_xlabel("recall (sensitivity)")
        ax.set_ylabel("precision (PPV)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    _legend_below(ax)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_roc(curves: Mapping[str, dict], path, labels: Mapping[str, str] | None = None,
             title: str = "ROC (shaded: 95 % bootstrap band)") -> Path:
    """ROC curves (``{name: curve_bands(..., "roc")}``) with their bands."""
    return _curve_plot(curves, path, "roc", title, labels or {})


def plot_pr(curves: Mapping[str, dict], path, labels: Mapping[str, str] | None = None, prevalence=None,
            title: str = "Precision-recall (shaded: 95 % bootstrap band)") -> Path:
    """Precision-recall curves with their bands; dotted lines mark the prevalence (a random model)."""
    return _curve_plot(curves, path, "pr", title, labels or {}, prevalence)


def plot_reliability(before: Mapping[str, Any], after: Mapping[str, Any] | None, path,
                     title: str = "Reliability diagram", xmin: float = 0.0) -> Path:
    """Accuracy per confidence bin before (and after) temperature scaling, with the bin counts below.

    ``before`` / ``after`` are :func:`~medfuse.evaluation.calibration.calibration_summary` outputs
    (with a ``label`` key for the legend, optional).
    """
    fig = _figure(5.0, 5.4)
    ax = fig.add_axes([0.14, 0.34, 0.82, 0.58])
    axh = fig.add_axes([0.14, 0.08, 0.82, 0.17], sharex=ax)
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="perfect calibration")
    for summ, col, default in ((before, "tab:red", "before"), (after, "tab:blue", "after")):
        if not summ or not summ.get("bins"):
            continue
        b = summ["bins"]
        edges = np.asarray(b["edges"])
        mids = (edges[:-1] + edges[1:]) / 2
        acc = np.asarray(b["accuracy"], dtype=float)
        conf = np.asarray(b["confidence"], dtype=float)
        ok = np.isfinite(acc)
        ece = summ.get("ece")
        label = f"{summ.get('label', default)} (ECE {ece:.3f})" if ece is not None else summ.get("label", default)
        ax.plot(conf[ok], acc[ok], marker="o", color=col, lw=1.5, label=label)
        width = (edges[1] - edges[0]) * (0.45 if after else 0.9)
        shift = -width / 2 if (after and summ is before) else (width / 2 if after else 0)
        axh.bar(mids + shift, b["count"], width=width, color=col, alpha=0.6)
    ax.set_xlim(float(xmin), 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed accuracy")
    n_bins = len((before or {}).get("bins", {}).get("edges", [])) - 1
    ax.set_title(title + (f" ({n_bins} bins)" if n_bins > 0 else ""))
    ax.grid(alpha=0.3)
    axh.set_xlabel("predicted confidence")
    axh.set_ylabel("cases")
    _legend_below(axh, ax)  # under the histogram: the points can lie anywhere in the upper panel
    return _save(fig, path, tight=False)


def plot_confusion(cm: Sequence[Sequence[int]], classes: Sequence[str], path, title: str = "Confusion matrix") -> Path:
    """Counts with row percentages (rows true class, columns predicted class)."""
    m = np.asarray(cm, dtype=np.int64)
    c = len(classes)
    fig = _figure(max(4.0, 1.1 * c + 2.4), max(3.6, 1.0 * c + 2.0))
    ax = fig.add_subplot(1, 1, 1)
    rows = m.sum(1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros_like(m, dtype=float), where=rows > 0)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(c):
        for j in range(c):
            ax.text(j, i, f"{m[i, j]}\n{100 * frac[i, j]:.0f}%", ha="center", va="center",
                    color="white" if frac[i, j] > 0.6 else "black", fontsize=9)
    ax.set_xticks(range(c), [str(x) for x in classes], rotation=30, ha="right")
    ax.set_yticks(range(c), [str(x) for x in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


def plot_entropy(entropy: Any, correct: Any, path, title: str = "Predictive entropy", xlabel: str = "entropy (nats)") -> Path:
    """Histograms of the uncertainty of correct and incorrect decisions."""
    e = np.asarray(entropy, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    fin = np.isfinite(e)
    fig = _figure(5.0, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    hi = float(e[fin].max()) if fin.any() else 1.0
    bins = np.linspace(0, hi if hi > 0 else 1.0, 21)
    ax.hist(e[fin & ok], bins=bins, alpha=0.6, color="tab:green", label=f"correct (n={int((fin & ok).sum())})")
    ax.hist(e[fin & ~ok], bins=bins, alpha=0.6, color="tab:red", label=f"incorrect (n={int((fin & ~ok).sum())})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("cases")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_risk_coverage(selective: Mapping[str, Any], path, title: str = "Risk-coverage (selective prediction)") -> Path:
    """Error rate of the kept cases against the fraction kept, with the oracle's curve."""
    cov = np.asarray(selective["curve"]["coverage"], dtype=float)
    risk = np.asarray(selective["curve"]["risk"], dtype=float)
    fig = _figure(5.0, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    aurc = selective.get("aurc")
    ax.plot(cov, risk, color="tab:blue", lw=2,
            label=f"ranked by {selective.get('measure', 'uncertainty')}" + (f" (AURC {aurc:.3f})" if aurc is not None else ""))
    alt = selective.get("alternative")
    if alt and alt.get("curve"):
        ax.plot(alt["curve"]["coverage"], alt["curve"]["risk"], color="tab:orange", lw=1.5,
                label=f"ranked by {alt['measure']}" + (f" (AURC {alt['aurc']:.3f})" if alt.get("aurc") is not None else ""))
    if len(cov):
        n = len(cov)
        errors = int(round(risk[-1] * n))
        k = np.arange(1, n + 1)
        oracle = np.maximum(k - (n - errors), 0) / k
        ax.plot(cov, oracle, ls="--", color="0.5", lw=1, label="oracle (errors referred first)")
    top = max(0.05, float(np.nanmax(risk)) * 1.1 if len(risk) else 1)
    referral = selective.get("referral") or {}
    for k, (name, r) in enumerate(referral.items()):
        # one legend entry names all the dotted lines: text beside each would cover the curves
        ax.axvline(1 - r["fraction"], ls=":", color="0.55", lw=1,
                   label=("referral points: refer " + ", ".join(referral) + " (coverage "
                          + ", ".join(f"{1 - v['fraction']:.2f}" for v in referral.values()) + ")") if k == 0 else None)
    ax.set_xlabel("coverage (fraction of cases kept)")
    ax.set_ylabel("risk (error rate of kept cases)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, top)
    ax.set_title(title)
    _legend_below(ax)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_gallery(entries: Sequence[Mapping[str, Any]], path, columns: int = 4,
                 title: str = "Most uncertain cases") -> Path | None:
    """A grid of images (``entries``: ``{"png": path, "caption": text}``), e.g. CAM overlays."""
    import matplotlib.image as mpimg

    entries = [e for e in entries if e.get("png") and Path(e["png"]).is_file()]
    if not entries:
        return None
    images = [mpimg.imread(str(e["png"])) for e in entries]
    cols = min(columns, len(entries))
    rows = int(np.ceil(len(entries) / cols))
    aspect = images[0].shape[0] / images[0].shape[1]  # the overlays carry their own captions
    width = 3.6
    fig = _figure(width * cols, width * aspect * rows + 0.6)
    for i, (e, img) in enumerate(zip(entries, images)):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(img)
        if e.get("caption"):
            ax.set_title(str(e["caption"])[:60], fontsize=7)
        ax.axis("off")
    fig.suptitle(title)
    return _save(fig, path)

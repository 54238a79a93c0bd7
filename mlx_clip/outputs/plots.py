"""runs/NAME/loss.png and recall.png: the training curves the report shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .run_paths import RunPaths
from ..train.metric_names import I2I_R1, I2I_RECALLS, MEAN_R1, RETRIEVAL_RECALLS, ZERO_SHOT, ci_key, recall_key

CHART_KEYS = (MEAN_R1, recall_key("i2t", 1), recall_key("t2i", 1), ZERO_SHOT, I2I_R1)  # the table has the rest
COLOURS = {"better": "#137a2c", "worse": "#b3261e", "not distinguishable": "#555555"}


def autoscale(ax, lows: list[float], highs: list[float], floor: float | None = 0.0, ceiling: float | None = 1.0):
    """Y limits that fit the data and its intervals with a margin (never the whole 0-1 range when
    every score lies near 0), clipped to what the score can be."""
    if not lows:
        return
    low, high = min(lows), max(highs)
    pad = max((high - low) * 0.12, 0.01)
    low, high = low - pad, high + pad
    ax.set_ylim(max(low, floor) if floor is not None else low, min(high, ceiling) if ceiling is not None else high)


def recall_axes(ax, history: list[dict]) -> None:
    """Recall@k both ways, image-to-image recall and zero-shot accuracy per epoch, each with its
    95 % interval as a band, on an axis scaled to them."""
    import matplotlib.ticker

    epochs = np.array([h["epoch"] for h in history])
    lows, highs = [], []
    for i, key in enumerate(RETRIEVAL_RECALLS + (ZERO_SHOT,) + I2I_RECALLS):
        values = np.array([np.nan if h.get(key) is None else h[key] for h in history], dtype=float)
        if np.isnan(values).all():
            continue
        ci = np.array([h.get(ci_key(key)) or [v, v] for h, v in zip(history, values)], dtype=float)
        line, = ax.plot(epochs, values, "o-" if "i2t" in key else "s--", color=f"C{i}", label=key)
        ax.fill_between(epochs, ci[:, 0], ci[:, 1], color=line.get_color(), alpha=0.12)
        lows += [float(np.nanmin(ci))]
        highs += [float(np.nanmax(ci))]
    autoscale(ax, lows, highs)
    ax.set_xlabel("epoch (0 = before fine-tuning)")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("validation score (bands: 95 % CI)")
    if lows:
        ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)


def differences_chart(path: Path, result: dict) -> Path | None:
    """compare.png: each row's paired difference from the first run, per metric, with its 95 %
    interval; green when the interval is above 0, red below, grey when it includes 0."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["runs"][1:] + ([result["base"]] if result.get("base") else [])
    bars = [(key, Path(row["run"]).name, entry) for row in rows for key, entry in row["metrics"].items()
            if ci_key("diff") in entry and key in CHART_KEYS]
    if not bars:
        return None
    first = Path(result["runs"][0]["run"]).name
    fig, ax = plt.subplots(figsize=(8, 0.75 + 0.32 * len(bars)))
    for y, (key, name, entry) in enumerate(reversed(bars)):
        low, high = entry[ci_key("diff")]
        colour = COLOURS.get(entry["words"], "#555555")
        ax.errorbar(entry["diff"], y, xerr=[[entry["diff"] - low], [high - entry["diff"]]], fmt="o", color=colour,
                    capsize=3)
    ax.set_yticks(range(len(bars)), [f"{key}  {name}" for key, name, _ in reversed(bars)], fontsize=8)
    ax.axvline(0, color="black", lw=1)
    ax.set_xlabel(f"difference from {first} on the held-out test set (paired 95 % CI)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_plots(paths: RunPaths, history: list[dict], step_losses: list[float]) -> list[Path]:
    """loss.png (per step and per epoch) and recall.png (R@k per epoch, both ways)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(7, 4))
    if step_losses:
        ax.plot(np.arange(1, len(step_losses) + 1), step_losses, lw=0.8, alpha=0.6,
                label="step (a short last batch has fewer negatives, so a lower loss)")
        steps_per_epoch = max(1, len(step_losses) // max(1, sum(1 for h in history if h["epoch"] > 0)))
        epochs = [(h["epoch"] * steps_per_epoch, h["train_loss"]) for h in history if h.get("train_loss") is not None]
        if epochs:
            ax.plot(*zip(*epochs), "o-", label="epoch mean")
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss")
    if step_losses:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(paths.loss_plot, dpi=110)
    plt.close(fig)
    written.append(paths.loss_plot)
    fig, ax = plt.subplots(figsize=(7, 4))
    recall_axes(ax, history)
    fig.tight_layout()
    fig.savefig(paths.recall_plot, dpi=110)
    plt.close(fig)
    written.append(paths.recall_plot)
    return written



def wise_ft_plot(path: Path, mix: dict) -> Path | None:
    """wise_ft.png: each mix's validation mean recall@1 (with its interval) against the share of the
    base model's general skill it keeps, each point labelled with its a; the kept mix ringed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in mix["points"] if p.get(MEAN_R1) is not None]
    if not points:
        return None
    kept = [p.get("retention_percent") for p in points]
    has_retention = all(k is not None for k in kept) and not any(p.get("retention_at_chance") for p in points)
    xs = kept if has_retention else [p["alpha"] for p in points]
    fig, ax = plt.subplots(figsize=(6, 4))
    for x, p in zip(xs, points):
        ci = p.get(ci_key(MEAN_R1)) or [p[MEAN_R1], p[MEAN_R1]]
        ax.errorbar(x, p[MEAN_R1], yerr=[[p[MEAN_R1] - ci[0]], [ci[1] - p[MEAN_R1]]], fmt="o", color="C0", capsize=3)
        ax.annotate(f"a = {p['alpha']:g}", (x, p[MEAN_R1]), textcoords="offset points", xytext=(6, 6), fontsize=8)
        if p["alpha"] == mix["alpha"]:
            ax.plot(x, p[MEAN_R1], "o", ms=14, mfc="none", mec="C3", mew=2, label=f"kept: a = {p['alpha']:g}")
    ax.plot(xs, [p[MEAN_R1] for p in points], "-", color="C0", alpha=0.3)
    ax.set_xlabel("retention: % of the base model's general skill kept" if has_retention else "a (mixing weight)")
    ax.set_ylabel("validation mean recall@1 (95 % CI)")
    ax.set_title(f"WiSE-FT: (1 - a) base + a fine-tuned; rule {mix['rule']}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curve(path: Path, result: dict) -> Path:
    """Left: mean recall@1 and zero-shot accuracy with 95 % bands, the flattening point and the
    survey formula's n; right: recall@1/5/10 each way."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in result["points"] if p["size"] > 0]
    before = result["points"][0]
    sizes = np.array([p["size"] for p in points])
    survey = result.get("survey") or {}
    right_edge = max(sizes.max(), survey.get("size", 0)) * 1.05
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 6), gridspec_kw={"width_ratios": [3, 2]})
    lows, highs = [], []
    for key, label, colour, style in ((MEAN_R1, "mean recall@1", "C0", "o-"),
                                      (ZERO_SHOT, "zero-shot accuracy", "C3", "D-")):
        if not all(key in p for p in points):
            continue
        values = np.array([p[key] for p in points])
        ci = np.array([p.get(ci_key(key)) or [p[key], p[key]] for p in points])
        ax.plot(sizes, values, style, color=colour, label=f"{label} (band: 95 % CI)")
        ax.fill_between(sizes, ci[:, 0], ci[:, 1], color=colour, alpha=0.15)
        lows.append(float(ci.min()))
        highs.append(float(ci.max()))
        if key in before:
            ax.axhline(before[key], color=colour, lw=1, ls=":", label=f"{label} before fine-tuning")
            lows.append(before[key])
            highs.append(before[key])
    if result.get("flat_at"):
        ax.axvline(result["flat_at"], color="black", lw=1.2, ls="-.",
                   label=f"flattens at {result['flat_at']} (< {result['flat_threshold']:g} R@1 per 100 more, "
                         "by its paired interval)")
    if survey:
        ax.axvline(survey["size"], color="purple", lw=1.2, ls="--", label=f"survey formula n = {survey['size']}")
    if result.get("distinguishable_at"):
        ax.axvline(result["distinguishable_at"], color="C2", lw=1.2, ls="--",
                   label=f"gain over the start distinguishable from {result['distinguishable_at']}")
    ax.set_xlabel(f"training images (nested random subsets); validation n = {result['val_size']}")
    ax.set_ylabel("validation score")
    ax.set_title("How many images are enough?")
    right = []
    for key, style, colour in zip(RETRIEVAL_RECALLS, ("o-", "o--", "o:", "s-", "s--", "s:"),
                                  ("C0", "C1", "C2", "C4", "C5", "C6")):
        if all(key in p for p in points):
            ax2.plot(sizes, [p[key] for p in points], style, color=colour, label=key.replace("_R@", " R@"))
            right += [p[key] for p in points]
    autoscale(ax, lows, highs)
    autoscale(ax2, right[:1] and [min(right)], right[:1] and [max(right)])
    ax2.set_title("recall@k: image→text (i2t), text→image (t2i)")
    ax2.set_xlabel("training images")
    for a in (ax, ax2):
        a.set_xlim(0, right_edge)
        a.grid(alpha=0.3)
        a.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""runs/NAME/loss.png and recall.png: the training curves the report shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..outputs.run_paths import RunPaths


def save_plots(paths: RunPaths, history: list[dict], step_losses: list[float]) -> list[Path]:
    """loss.png (per step and per epoch) and recall.png (R@k per epoch, both ways)."""
    import matplotlib
    import matplotlib.ticker
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
    epochs = [h["epoch"] for h in history]
    for key in ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "zero_shot_acc"):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax.plot(epochs, [np.nan if v is None else v for v in values], "o-" if "i2t" in key else "s--", label=key)
    ax.set_xlabel("epoch (0 = before fine-tuning)")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("validation score")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(paths.recall_plot, dpi=110)
    plt.close(fig)
    written.append(paths.recall_plot)
    return written


# --- run -------------------------------------------------------------------------------------------

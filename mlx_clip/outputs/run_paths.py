"""Where a run's files live: runs/NAME/config.json, metrics.json, model/, checkpoints/ ...

The one owner of these names: the run writes them, and the report, the model card, curve and
compare read them through `RunPaths`. It lives under outputs/ (not run/) so that the report and
the card, which run/ imports, can read it without importing run/ back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..models.weights import HF_WEIGHTS, MLX_WEIGHTS
from ..train.checkpoint import LATEST

RUN_LOCK = ".run.lock"  # runs/NAME/.run.lock: the pid of the one process writing the run (mlx_clip.folder_lock)


def check_run_name(name: str, flag: str = "--name") -> str:
    """A run's name becomes one folder under --runs-dir: letters, digits, '.', '-' and '_', not
    starting with '.' (so never '.', '..', a hidden folder, a path with '/' or an absolute path).
    '..' would put the run in the parent of --runs-dir, whose *.part files the start-up cleanup deletes."""
    if not re.fullmatch(r"\w[\w.\-]*", name or ""):
        raise InputError(f"{flag} {name!r}: a run name is one folder name: letters, digits, '.', '-' and '_', "
                         "not starting with '.'")
    return name


@dataclass(frozen=True)
class RunPaths:
    """The files of the run folder `root` (runs/NAME)."""

    root: Path

    @classmethod
    def of(cls, runs_dir: str | Path, name: str) -> "RunPaths":
        return cls(Path(runs_dir) / name)

    @property
    def config(self) -> Path:
        """The settings (and what they resolved to); `--resume` reads them back."""
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def captions(self) -> Path:
        """The caption check made before training (data/caption_check.py)."""
        return self.root / "captions.json"

    @property
    def split(self) -> Path:
        """Record ids of train, validation and test, with the test set's fingerprint (compare.py)."""
        return self.root / "split.json"

    @property
    def card_data(self) -> Path:
        """What the model card says about the data (CardInfo.from_run reads it)."""
        return self.root / "data.json"

    @property
    def model(self) -> Path:
        """The best epoch, saved once: a transformers / sentence-transformers folder with its model
        card, which mlx_clip.load, llm and the hub take as it is. (Runs made before this held the
        MLX layout here and the HF copy in `export`.)"""
        return self.root / "model"

    @property
    def export(self) -> Path:
        """An old run's second copy of the best model, in HF layout (runs now save `model` only)."""
        return self.root / "export"

    @property
    def old_layout(self) -> bool:
        """Whether model/ holds an old run's MLX-layout weights (mlx_model.safetensors)."""
        return (self.model / MLX_WEIGHTS).is_file()

    @property
    def published_model(self) -> Path:
        """The folder to register or push: model/, or an old run's export/ (model/ is MLX there)."""
        if self.old_layout and (self.export / HF_WEIGHTS).is_file():
            return self.export
        return self.model

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def latest_checkpoint(self) -> Path:
        """The pointer to the newest complete checkpoint (a run that has one can be resumed)."""
        return self.checkpoints / LATEST

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def loss_plot(self) -> Path:
        return self.root / "loss.png"

    @property
    def recall_plot(self) -> Path:
        return self.root / "recall.png"

    @property
    def wise_ft_plot(self) -> Path:
        """--wise-ft's trade-off: validation gain against retention, one point per mix."""
        return self.root / "wise_ft.png"

    @property
    def eval_before(self) -> Path:
        """Epoch 0's per-item validation ranks and embeddings (report.html's "before")."""
        return self.root / "eval_before.npz"

    @property
    def test_before(self) -> Path:
        """The test set's per-item results before training, in split.json's test order."""
        return self.root / "eval_test_before.npz"

    @property
    def test_before_metrics(self) -> Path:
        """The test set's scores before training (a resumed run reads them back)."""
        return self.root / "eval_test_before.json"

    @property
    def test_after(self) -> Path:
        """The best model's per-item test results, in split.json's test order (compare.py)."""
        return self.root / "eval_test.npz"

    @property
    def curve_json(self) -> Path:
        return self.root / "curve.json"

    @property
    def curve_plot(self) -> Path:
        return self.root / "curve.png"

    @property
    def curve_html(self) -> Path:
        return self.root / "curve.html"

"""Which run folder a command writes: a fresh run's name, or the stopped run that `--resume`
continues (its saved settings and checkpoint), and what a stop left to resume from."""

from __future__ import annotations

import itertools
import json
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..settings import FinetuneConfig, ignored_on_resume
from ..data.fetch_config import FetchConfig
from ..errors import InputError
from ..folder_lock import hold_folder_lock
from ..io import read_small_text
from ..outputs.run_paths import RUN_LOCK, RunPaths, check_run_name
from ..train.checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint
from ..train.distributed import Dist


def open_run(config: FinetuneConfig, resume: str | None, dist: Dist, say: Callable[[str], None]
             ) -> tuple[FinetuneConfig, Checkpoint | None, AbstractContextManager[None]]:
    """The run's folder: a fresh run's name (--name checked, or the start time), or the resumed
    run's saved config and checkpoint (rank 0 reads them; other ranks receive them); then the
    folder claimed and the lock to hold while the run writes there (hold_run_folder)."""
    unnamed = config.name is None and not resume  # named by its start time: the first free NAME, NAME-2 ...
    if not resume:
        config, checkpoint = replace(config, name=run_name(config)), None
    else:
        config, checkpoint = resumed_run(config, resume, dist, say)
    config, folder_lock = hold_run_folder(config, unnamed, dist)
    return config, checkpoint, folder_lock


def resumed_run(config: FinetuneConfig, resume: str, dist: Dist,
                say: Callable[[str], None]) -> tuple[FinetuneConfig, Checkpoint]:
    """The saved settings and checkpoint of the run that `resume` names, the same on every rank;
    the flags given beside --resume that it ignores are said once."""
    saved, checkpoint = None, None
    if dist.is_main:
        saved, folder = resume_config(config, resume)
        checkpoint = load_checkpoint(folder)
    shared, checkpoint = dist.resume(saved.to_dict() if saved else None, checkpoint)
    resumed = FinetuneConfig.from_dict(shared)
    say(f"resuming {RunPaths.of(resumed.runs_dir, resumed.name).root} from {checkpoint.folder.name} "
        f"(settings from its config.json)")
    ignored = ignored_on_resume(config, resumed)
    if ignored:
        say("warning: a resumed run keeps its saved settings; ignored: " + ", ".join(ignored))
    return resumed, checkpoint

def run_name(config: FinetuneConfig) -> str:
    """--name checked (it becomes a folder name; RunPaths owns the rule), or the start time."""
    if config.name is not None:
        return check_run_name(config.name)
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def hold_run_folder(config: FinetuneConfig, unique: bool, dist: Dist
                    ) -> tuple[FinetuneConfig, AbstractContextManager[None]]:
    """Rank 0 claims runs/NAME (see claim_run_folder) and returns the config with that name and
    the lock to hold while the run writes there; the other ranks write nothing and hold nothing."""
    if not dist.is_main:
        return config, nullcontext()
    name, created = claim_run_folder(config.runs_dir, config.name, unique=unique)
    return replace(config, name=name), lock_run_folder(RunPaths.of(config.runs_dir, name).root, created)


def claim_run_folder(runs_dir: str | Path, name: str, unique: bool) -> tuple[str, list[Path]]:
    """Create runs/NAME; return NAME and the folders this call created (for `lock_run_folder` to
    remove again if the run stops before writing anything). `unique` (a run without --name, named
    by its start time): the first free NAME, NAME-2, NAME-3 ..., claimed by mkdir, which is atomic,
    so two runs started in the same second get two folders instead of overwriting one."""
    runs, created = Path(runs_dir), []
    if not runs.is_dir():
        runs.mkdir(parents=True, exist_ok=True)
        created.append(runs)
    for attempt in itertools.count(1):
        candidate = name if attempt == 1 else f"{name}-{attempt}"
        try:
            (runs / candidate).mkdir()
            return candidate, created + [runs / candidate]
        except FileExistsError:
            if not unique:
                return name, created
    raise AssertionError("unreachable")


@contextmanager
def lock_run_folder(root: Path, created: Sequence[Path] = ()) -> Iterator[None]:
    """Hold runs/NAME/.run.lock while the run writes there: a second run on the same folder (the
    same --name, or --resume of a running run) stops in one line naming the pid. A run that stops
    before writing anything removes the folders its claim `created` again (nothing left behind)."""
    with hold_folder_lock(root, RUN_LOCK, f"{root}: another run (pid {{pid}}) is writing to this run folder; "
                                          "wait for it to finish or pass another --name"):
        try:
            yield
        except BaseException:
            for folder in reversed(created):
                if sorted(p.name for p in folder.iterdir()) in ([], [RUN_LOCK] if folder == root else []):
                    (folder / RUN_LOCK).unlink(missing_ok=True)
                    folder.rmdir()
            raise


def latest_run(runs_dir: Path) -> Path:
    runs = [p for p in runs_dir.glob("*") if RunPaths(p).latest_checkpoint.is_file()]
    if not runs:
        raise InputError(f"{runs_dir}: no run with a checkpoint to resume (pass --name NAME)")
    return max(runs, key=lambda p: RunPaths(p).latest_checkpoint.stat().st_mtime)


def resume_config(config: FinetuneConfig, resume: str) -> tuple[FinetuneConfig, Path]:
    """The saved config of the run to resume and its checkpoint folder."""
    if config.name is not None:  # before it names a folder to read
        check_run_name(config.name)
    runs_dir = Path(config.runs_dir)
    if resume != "latest":
        checkpoint = resolve_checkpoint(resume, runs_dir)
        run_dir = checkpoint.parent.parent
    else:
        run_dir = runs_dir / config.name if config.name else latest_run(runs_dir)
        checkpoint = resolve_checkpoint("latest", RunPaths(run_dir).checkpoints)
    saved = json.loads(read_small_text(RunPaths(run_dir).config))
    resumed = replace(FinetuneConfig.from_dict(saved), runs_dir=str(run_dir.parent),
                      name=check_run_name(run_dir.name, "--resume's run folder"))
    recorded = (saved.get("resolved") or {}).get("manifest")
    if recorded and Path(recorded).is_file():  # the same records and split, never a new fetch
        resumed = replace(resumed, manifest=recorded, fetch=FetchConfig(id_field=resumed.fetch.id_field),
                          sample=replace(resumed.sample, sample=None, margin=None))
    return resumed, checkpoint


def stopped_run(config: FinetuneConfig, resume: str | None) -> Path | None:
    """The folder `run(config, resume)` was writing when it stopped; None if it had none yet.
    (run() sets `config.name` of a fresh run; a resumed one is found as run() found it.)"""
    runs_dir = Path(config.runs_dir)
    try:
        if resume and resume != "latest":
            return resolve_checkpoint(resume, runs_dir).parent.parent
        if config.name:
            return runs_dir / config.name
        return latest_run(runs_dir) if resume else None
    except InputError:
        return None


def last_checkpoint_epoch(run_dir: Path | None) -> int | None:
    """The epoch of the run's `latest` checkpoint (None when it has none)."""
    pointer = RunPaths(run_dir).latest_checkpoint if run_dir else None
    try:
        return int(read_small_text(pointer).strip().removeprefix("epoch-")) if pointer else None
    except (OSError, ValueError, InputError):  # no checkpoint yet, or a damaged pointer
        return None


def check_resumed_split(paths: RunPaths, split_ids: dict) -> None:
    """Refuse to resume on records whose train/val/test split is not the one the run trained on.

    --resume recomputes the split from the manifest; if its record ids changed since (records
    edited, or a run made before record ids were derived as now), continuing would train and
    score on other images than the checkpoint's history did. A run without split.json is not checked.
    """
    if not paths.split.is_file():
        return
    saved = json.loads(read_small_text(paths.split))
    differ = [side for side in ("train", "val", "test") if saved.get(side) != split_ids.get(side)]
    if differ:
        raise InputError(f"{paths.split}: the {'/'.join(differ)} record ids recomputed from the manifest differ from "
                         f"the ones this run was trained on (records changed, or the run predates the current "
                         f"record ids); --resume cannot continue it: start a new run with another --name")

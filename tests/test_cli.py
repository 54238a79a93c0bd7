"""The CLI generated from the one config tree: the same help from every way in, each default said
once, curve's help only its own flags, --config files (JSON, YAML, a run's config.json, old flat
ones) with flags laid over them."""

import importlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mlx_clip import curve, fetch, finetune
from mlx_clip.flags import rows
from mlx_clip.settings import FetchConfig, FinetuneConfig, load_config
from mlx_clip.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("fetch", "finetune", "curve")
FINETUNE_ONLY = ("--resume", "--dry-run", "--register", "--replace", "--push-to-hub", "--public")


def _help(argv: list[str]) -> str:
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "COLUMNS": "100"})
    assert result.returncode == 0, result.stderr
    return result.stdout


def _entry_point_help(command: str, capsys) -> str:
    """--help from the console script's target as pyproject.toml names it (module:function)."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts[f"mlx-clip-{command}"].partition(":")
    with pytest.raises(SystemExit) as exit_:
        getattr(importlib.import_module(module), function)(["--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_help_is_the_same_from_every_way_in(command, capsys, monkeypatch):
    as_module = _help([sys.executable, "-m", f"mlx_clip.{command}", "--help"])
    as_script = _help([sys.executable, f"{command}.py", "--help"])
    monkeypatch.setenv("COLUMNS", "100")
    assert as_module == as_script == _entry_point_help(command, capsys)
    assert as_module.startswith(f"usage: {command}.py ")


def _option_entries(help_text: str) -> dict[str, str]:
    """Each option's help text, by its first flag."""
    entries: dict[str, str] = {}
    current = None
    for line in help_text.split("\n\n", 2)[-1].splitlines():
        match = re.match(r"\s{2}(-{1,2}[\w-]+)", line)
        if match:
            current = match.group(1)
            entries[current] = line
        elif current and line.startswith(" " * 10):
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


@pytest.mark.parametrize("command", COMMANDS)
def test_each_default_is_said_once(command):
    parser = {"fetch": fetch.build_parser, "finetune": finetune.build_parser, "curve": curve.curve_parser}[command]()
    entries = _option_entries(parser.format_help())
    assert len(entries) > 20 if command != "fetch" else len(entries) > 15
    for flag, text in entries.items():
        assert len(re.findall(r"default", text, re.IGNORECASE)) <= 1, (flag, text)
    assert "(default: 32)" in entries["--batch-size"] if command != "fetch" else True
    assert "(default: 16)" in entries["--concurrency"] and "(default: 50,000,000)" in entries["--max-bytes"]


def test_curve_help_lists_only_the_flags_curve_accepts():
    curve_help, finetune_help = curve.curve_parser().format_help(), finetune.build_parser().format_help()
    listed = set(re.findall(r"(--[a-z][\w-]*)", curve_help))
    for flag in FINETUNE_ONLY:
        assert flag not in listed
        assert flag in finetune_help
    shared = set(re.findall(r"(--[a-z][\w-]*)", finetune_help)) - set(FINETUNE_ONLY)
    assert shared <= listed  # every setting of the tree, as finetune takes it
    parser = curve.curve_parser()
    for flag in FINETUNE_ONLY:  # refused by the parser itself: not listed, not accepted
        with pytest.raises(SystemExit):
            parser.parse_args(["--sizes", "10", flag])


def test_fetch_flags_keep_their_spelling_and_meaning(tmp_path):
    args = fetch.build_parser().parse_args(
        ["r.json", "--sample", "5", "--stratify", "kind", "--seed", "3", "--url-field", "u", "--path-field", "p",
         "--id-field", "i", "--encoding", "windows-1252", "--out", str(tmp_path), "--concurrency", "2",
         "--per-host", "1", "--timeout", "6", "--deadline", "9", "--retries", "-1", "--max-bytes", "7",
         "--no-progress", "--allow-private"])
    parsed = finetune.config_from_args(args)
    assert (parsed.sample.sample, parsed.sample.stratify, parsed.sample.seed) == (5, "kind", 3)
    f = parsed.fetch
    assert (f.url_field, f.path_field, f.id_field, f.encoding, f.out) == ("u", "p", "i", "cp1252", tmp_path)
    assert (f.concurrency, f.per_host, f.read_timeout, f.deadline, f.retries, f.max_bytes) == (2, 1, 6.0, 9.0, 0, 7)
    assert (f.progress, f.allow_private, f.connect_seconds) == (False, True, 2.0)
    assert FetchConfig().connect_seconds == 10.0  # as before: a third of 30 s, at most 10 s


def _parse(*argv: str) -> FinetuneConfig:
    return finetune.config_from_args(finetune.build_parser().parse_args(list(argv)))


SETTINGS = {"model": "some/model", "epochs": 2, "captions": ["{title}", "{kind}"],
            "sample": {"sample": 40, "stratify": "kind", "seed": 7},
            "fetch": {"out": "elsewhere", "read_timeout": 5},
            "optim": {"lr": 0.001, "warmup": 0}, "locks": {"lock_text": True, "unlock_last": 1},
            "augment": {"hflip": False, "rotate": 10}}


def _write(path: Path, settings: dict) -> Path:
    if path.suffix == ".json":
        path.write_text(json.dumps(settings))
    else:
        import yaml

        path.write_text(yaml.safe_dump(settings))
    return path


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_config_file_loads_the_tree_and_flags_override_it(tmp_path, suffix):
    path = _write(tmp_path / f"run{suffix}", SETTINGS)
    config = _parse("--config", str(path))
    assert (config.model, config.epochs, config.captions) == ("some/model", 2, ["{title}", "{kind}"])
    assert (config.sample.sample, config.sample.stratify, config.sample.seed) == (40, "kind", 7)
    assert (config.fetch.out, config.fetch.read_timeout) == (Path("elsewhere"), 5.0)
    assert (config.optim.lr, config.optim.warmup, config.locks.lock_text, config.locks.unlock_last) == \
        (0.001, 0.0, True, 1)
    assert (config.augment.hflip, config.augment.rotate, config.batch_size) == (False, 10.0, 32)  # 32: default
    over = _parse("--config", str(path), "--epochs", "4", "--lr", "0.5", "--seed", "1", "--caption", "{x}",
                  "--out", "there")
    assert (over.epochs, over.optim.lr, over.sample.seed, over.captions, over.fetch.out) == \
        (4, 0.5, 1, ["{x}"], Path("there"))
    assert (over.sample.sample, over.locks.lock_text, over.augment.rotate) == (40, True, 10.0)  # the file's
    other = _parse("--config", str(path), "--margin", "0.05", "--manifest", "m.jsonl")  # exclusive with the file's
    assert (other.sample.sample, other.sample.margin, other.manifest, other.data) == \
        (None, "0.05", "m.jsonl", FinetuneConfig.data)


def test_a_config_round_trips_through_its_dict(tmp_path):
    config = _parse("--sample", "9", "--lock-image", "--label-prompt", "a {label}", "--label-prompt", "{label}",
                    "--crop-min-area", "0.3", "--warmup", "3", "--out", str(tmp_path))
    again = FinetuneConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.label_prompt == ["a {label}", "{label}"]
    assert ("optim.lr", 1e-5) in rows(config) and ("sample.sample", 9) in rows(config)  # the report's table


LEGACY = {"model": "m", "runs_dir": "runs", "name": "old", "data": "data/records.json", "manifest": None,
          "fetch": {"sample": 50, "out": "data", "url_field": "img", "concurrency": 3, "read_timeout": 12.0,
                    "connect_timeout": 4.0, "progress": True},
          "id_field": "uuid", "stratify": "period", "val_fraction": 0.2, "captions": ["{title}"],
          "label_field": None, "label_prompt": "a photo of {label}", "batch_size": 8, "epochs": 3, "lr": 2e-5,
          "warmup": 0.2, "weight_decay": 0.05, "seed": 4, "lock_image": True, "lock_text": False, "unlock_last": 2,
          "precision": "float32", "hflip": False, "vflip": True, "rotate": 5.0, "color_jitter": 0.1,
          "crop_min_area": 0.5, "threads": 2, "resolved": {"records": 10}, "a_key_of_an_older_version": 1}


def test_old_flat_config_json_is_read():
    config = FinetuneConfig.from_dict(LEGACY)
    assert (config.sample.sample, config.sample.margin, config.sample.stratify, config.sample.seed) == \
        (50, None, "period", 4)
    assert (config.fetch.url_field, config.fetch.id_field, config.fetch.concurrency) == ("img", "uuid", 3)
    assert (config.fetch.read_timeout, config.fetch.connect_timeout) == (12.0, 4.0)
    assert (config.optim.lr, config.optim.warmup, config.optim.weight_decay) == (2e-5, 0.2, 0.05)
    assert (config.locks.lock_image, config.locks.lock_text, config.locks.unlock_last) == (True, False, 2)
    a = config.augment
    assert (a.hflip, a.vflip, a.rotate, a.color_jitter, a.crop_min_area) == (False, True, 5.0, 0.1, 0.5)
    assert (config.batch_size, config.epochs, config.threads, config.val_fraction) == (8, 3, 2, 0.2)
    assert config.test_fraction == 0.0  # a run from before test sets kept none


def test_bad_config_files_are_one_line(tmp_path):
    cases = [({"optim": {"lr": "fast"}}, "setting 'optim.lr' must be a number, got 'fast'"),
             ({"optim": {"lr_max": 1}}, "unknown setting 'optim.lr_max'"),
             ({"epoch": 3}, "unknown setting 'epoch'"),
             ({"locks": True}, "'locks' must be a mapping of settings"),
             ({"fetch": {"concurrency": 0}}, "concurrency and per_host must be at least 1")]
    for settings, message in cases:
        path = _write(tmp_path / "bad.json", settings)
        with pytest.raises(InputError) as err:
            load_config(path)
        assert str(err.value).startswith(f"{path}: {message}") and "\n" not in str(err.value)
    (tmp_path / "broken.yaml").write_text("optim: [unclosed")
    with pytest.raises(InputError, match=r"broken.yaml: not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    assert finetune.main(["--config", str(tmp_path / "missing.json")]) == 2


def _epoch_one_loss(run: Path) -> float:
    history = json.loads((run / "metrics.json").read_text())["history"]
    return next(row["train_loss"] for row in history if row["epoch"] == 1)


def test_config_json_of_a_run_repeats_it(tiny_hf, shapes_manifest, tmp_path):
    runs = tmp_path / "runs"
    assert finetune.main(["--model", str(tiny_hf), "--manifest", str(shapes_manifest), "--runs-dir", str(runs),
                          "--name", "first", "--caption", "a {colour} {shape}", "--batch-size", "16",
                          "--epochs", "1", "--lr", "1e-3", "--seed", "11", "--stratify", "label",
                          "--val-fraction", "0.3", "--rotate", "15", "--no-progress"]) == 0
    saved = json.loads((runs / "first" / "config.json").read_text())
    assert saved["sample"]["seed"] == 11 and saved["optim"]["lr"] == 1e-3  # nested, as the tree
    assert finetune.main(["--config", str(runs / "first" / "config.json"), "--name", "again"]) == 0
    first, again = runs / "first", runs / "again"
    assert json.loads((again / "split.json").read_text()) == json.loads((first / "split.json").read_text())
    assert _epoch_one_loss(again) == pytest.approx(_epoch_one_loss(first), rel=1e-5)
    repeated = json.loads((again / "config.json").read_text())
    assert {**repeated, "name": "first"} == saved

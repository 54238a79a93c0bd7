"""The commands speak one language: each setting's flag is its config key, numbers in any notation,
--version everywhere, help without escapes, counts in the right number, warnings once, bars only
on a terminal, convert with --from/--to, and one runner owning the exit codes (issue 25)."""

from __future__ import annotations

import argparse
import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_clip import __main__ as dispatcher
from mlx_clip import compare, convert, curve, fetch, finetune, index, search
from mlx_clip.flags import key_flag, leaf_fields, setting_of_flag
from mlx_clip.command import run_command
from mlx_clip.settings import FinetuneConfig, config_from_args, load_config
from mlx_clip.errors import InputError
from mlx_clip.wording import counted, millions

ROOT = Path(__file__).resolve().parents[1]
PARSERS = {"fetch": fetch.build_parser, "finetune": finetune.build_parser, "curve": curve.curve_parser}
NOT_SETTINGS = {  # flags that act, not settings a run's config.json holds
    "--help", "-h", "--version", "--config", "--resume", "--dry-run", "--register", "--replace", "--push-to-hub", "--public",
    "--sizes", "--learning-curve", "--flat-threshold", "--survey-margin", "--population",
}


def _flat(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        out |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return out


@pytest.mark.parametrize("command", PARSERS)
def test_every_flag_in_help_is_a_key_of_the_runs_config_json(command):
    parser = PARSERS[command]()
    saved_keys = _flat(FinetuneConfig().to_dict())  # what runs/NAME/config.json holds (plus `resolved`)
    help_text = parser.format_help()
    for action in parser._actions:
        flags = [f for f in action.option_strings if f.startswith("--")]
        if not flags or set(flags) & NOT_SETTINGS:
            continue
        keyed = [f for f in flags if setting_of_flag(f) == action.dest]
        assert keyed, f"{flags}: no spelling names its setting {action.dest}"
        assert action.dest in saved_keys, action.dest
        assert keyed[0] in help_text  # the help shows the key spelling beside the short one


def test_the_key_spelling_sets_the_same_setting_as_the_short_flag():
    parser = finetune.build_parser()
    pairs = [(["--timeout", "7"], ["--fetch.read-timeout", "7"]), (["--lr", "1e-4"], ["--optim.lr", "1e-4"]),
             (["--lora", "4"], ["--lora.rank", "4"]), (["--caption", "{a}"], ["--captions", "{a}"]),
             (["--no-hflip"], ["--augment.no-hflip"]), (["--sample", "5"], ["--sample.sample", "5"])]
    for short, keyed in pairs:
        assert config_from_args(parser.parse_args(short)) == config_from_args(parser.parse_args(keyed)) \
            != FinetuneConfig(), short
    assert key_flag("fetch.read_timeout") == "--fetch.read-timeout"
    assert key_flag("augment.hflip", switches_off=True) == "--augment.no-hflip"
    for path in leaf_fields(FinetuneConfig):
        assert setting_of_flag(key_flag(path)) == path


def test_config_files_take_numbers_in_any_notation(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim: {lr: 1e-4, warmup: 5E1}\nepochs: 1e1\nbatch_size: 2_0\n")  # YAML reads 1e-4 as text
    config = load_config(path)
    assert (config.optim.lr, config.optim.warmup, config.epochs, config.batch_size) == (1e-4, 50.0, 10, 20)
    path.write_text("epochs: 1.5e0\n")
    with pytest.raises(InputError, match="setting 'epochs' must be a whole number, got '1.5e0'"):
        load_config(path)
    path.write_text("optim: {lr: fast}\n")
    with pytest.raises(InputError, match="setting 'optim.lr' must be a number, got 'fast'"):
        load_config(path)


def test_precision_takes_bf16_as_users_write_it_in_flags_and_files(tmp_path):
    """`--precision bf16` and `precision: bf16` in a settings file both mean bfloat16 (and the run's
    config.json says bfloat16); fp16 stays refused: the trainer keeps float32 or bfloat16."""
    parser = argparse.ArgumentParser()
    from mlx_clip.settings import add_arguments

    add_arguments(parser)
    assert config_from_args(parser.parse_args(["--precision", "BF16"])).precision == "bfloat16"
    path = tmp_path / "run.yaml"
    path.write_text("precision: bf16\n")
    assert load_config(path).precision == "bfloat16" and load_config(path).to_dict()["precision"] == "bfloat16"
    path.write_text("precision: fp16\n")
    with pytest.raises(InputError, match="--precision must be float32 or bfloat16, got 'float16'"):
        load_config(path).check()


MAINS = {"fetch": fetch.main, "finetune": finetune.main, "curve": curve.main, "compare": compare.main,
         "convert": convert.main, "index": index.main, "search": search.main}


@pytest.mark.parametrize("command", MAINS)
def test_every_command_has_version_and_help_without_escapes(command, capsys):
    for flag in ("--version", "--help"):
        with pytest.raises(SystemExit) as exit_:
            MAINS[command]([flag])
        assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("mlx-clip-finetune ")
    assert "%%" not in out and "95%" in out if command in ("compare", "curve") else "%%" not in out


def test_python_dash_m_mlx_clip_lists_and_dispatches_every_command():
    listed = subprocess.run([sys.executable, "-m", "mlx_clip"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and all(f"  {name}" in listed.stdout for name in MAINS)
    assert set(dispatcher.COMMANDS) == set(MAINS)
    version = subprocess.run([sys.executable, "-m", "mlx_clip", "compare", "--version"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("mlx-clip-finetune ")
    assert dispatcher.main(["nope"]) == 2


def test_the_runner_owns_the_exit_codes(capsys):
    def raising(err):
        def work():
            raise err
        return work

    assert run_command(lambda: None) == 0
    assert run_command(raising(InputError("records.json: record 3: field 'x' is missing"))) == 2
    assert run_command(raising(KeyboardInterrupt()), interrupted=lambda: "interrupted after epoch 2") == 130
    full = OSError(errno.ENOSPC, "No space left on device", "runs/x/model")
    assert run_command(raising(full), again=lambda: "--resume continues") == 2
    assert run_command(raising(OSError(errno.EIO, "Input/output error", "data/a.jpg"))) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["error: records.json: record 3: field 'x' is missing", "interrupted after epoch 2",
                     "error: runs/x/model: No space left on device; free space, then --resume continues",
                     "error: [Errno 5] Input/output error: 'data/a.jpg'"]
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_command(lambda: 1 / 0)


def test_counts_are_said_in_the_right_number():
    assert [counted(n, "step") for n in (0, 1, 2)] == ["0 steps", "1 step", "2 steps"]
    assert counted(1906, "image", thousands=True) == "1,906 images"
    # a model's total and trained parameters at one precision: 0.34M trained never beside "0.3M" in all
    assert [millions(n) for n in (338_000, 1_182_000, 151_277_313)] == ["0.338M", "1.18M", "151M"]
    from mlx_clip.run.console import duration  # a tiny model's epoch is not "0.0s"
    assert [duration(s) for s in (0.0437, 0.5, 8.14, 125, 12_000)] == ["0.044s", "0.5s", "8.1s", "2m05s", "3h20m"]
    from mlx_clip.data.dataset import Split

    split = Split.__new__(Split)
    split.shared_records, split.shared_images = 3, 1
    assert split.line().startswith("3 records share 1 image with another record")


def test_each_epoch_warning_is_said_once():
    from mlx_clip.run.console import stuck_warning, summary

    stuck = stuck_warning(1, [3.47] * 8, [32] * 8, 0, 1)
    assert stuck
    history = [{"epoch": 0, "mean_R@1": 0.1}, {"epoch": 1, "mean_R@1": 0.2, "warning": stuck}]
    assert stuck not in summary(Path("runs/x"), history, {"epoch": 1}, {"max_rss_bytes": 1})


def test_the_training_bar_is_for_terminals_and_logs_get_plain_lines(monkeypatch, capsys):
    from mlx_clip.train import epoch as loop

    class Trainer:  # the loop submits a step and settles it a step later (train/step.py)
        def submit(self, ids, pixels, groups=None):
            return 2.5

        def settle(self, pending):
            return pending

    class Stream:
        items = list(range(64))

        def __len__(self):
            return 2

        def epoch(self, epoch):
            for _ in range(2):
                yield {"input_ids": None, "pixels": None, "image_group": None, "record_id": list(range(32))}

    from mlx_clip import progress

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert loop.train_epoch(Trainer(), Stream(), 1, 3, progress=True) == ([2.5, 2.5], [32, 32])
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "it/s" not in captured.err and "img/s" not in captured.err
    assert captured.out.splitlines()[0].startswith("epoch 1/3: 32 of 64 images, loss 2.5000, ")
    loop.train_epoch(Trainer(), Stream(), 1, 3, progress=False)
    assert capsys.readouterr().out == ""
    # the fetch's progress is the same object: lines in a log, a bar only on a terminal
    lines = []
    with progress.Progress(3, "fetch", "records", say=lines.append) as shown:
        shown.update(2)
        shown.update(1)
    assert lines == ["fetch: 2 of 3 records", "fetch: 3 of 3 records"] and "\r" not in capsys.readouterr().err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with progress.Progress(3, "fetch", "records", say=lines.append) as shown:
        shown.update(3)
    assert len(lines) == 2  # on a terminal the bar alone


def test_convert_reads_from_and_writes_to_with_dtype_names_as_written(tmp_path, capsys):
    from mlx_clip.demo.tiny_model import build_tiny_clip

    mlx_folder = build_tiny_clip(tmp_path / "tiny")
    assert convert.main(["--from", str(mlx_folder), "--to", str(tmp_path / "hf")]) == 0  # MLX -> HF by default
    assert (tmp_path / "hf" / "model.safetensors").is_file() and (tmp_path / "hf" / "modules.json").is_file()
    assert convert.main(["--from", str(tmp_path / "hf"), "--to", str(tmp_path / "back"), "--dtype", "bfloat16"]) == 0
    assert (tmp_path / "back" / "mlx_model.safetensors").is_file()
    assert json.loads((tmp_path / "back" / "config.json").read_text())["dtype"] == "bfloat16"
    out = capsys.readouterr().out
    assert "(HF folder, float32, " in out and "(MLX folder, bfloat16, " in out and "mlx.core" not in out
    assert convert.main(["--to", str(tmp_path / "x")]) == 2
    assert "--from MODEL --to FOLDER" in capsys.readouterr().err
    assert convert.main(["--from", str(mlx_folder), "--to", str(tmp_path / "y"), "--push-to-hub", "a/b",
                         "--format", "mlx"]) == 2
    # the older spelling still works
    assert convert.main(["--to-hf", "--mlx-path", str(mlx_folder), "--hf-path", str(tmp_path / "old")]) == 0
    assert (tmp_path / "old" / "model.safetensors").is_file()


def test_resolve_paths_picks_the_other_format_than_the_source(tmp_path):
    args = convert.parse_args(["--from", "openai/clip-vit-base-patch32", "--to", str(tmp_path / "m")])
    assert convert.resolve_paths(args).format == "mlx"
    hf_folder = tmp_path / "hf"
    hf_folder.mkdir()
    args = convert.parse_args(["--from", str(hf_folder), "--to", str(tmp_path / "e"), "--push-to-hub", "a/b"])
    assert convert.resolve_paths(args).format == "hf"  # an upload is an HF export
    assert isinstance(args, argparse.Namespace)


def test_records_and_manifests_are_read_by_one_jsonl_reader_with_one_error_format(tmp_path):
    from mlx_clip.data.dataset import read_manifest
    from mlx_clip.data.imagefolder import write_metadata
    from mlx_clip.data.records import read_records

    bad = '{"image_path": "a.png", "sha256": "x", "id": 1}\n{"image_path": "b.png",}\n'
    for name, read in (("records.jsonl", read_records), ("manifest.jsonl", read_manifest),
                       ("sub/manifest.jsonl", write_metadata)):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(bad, encoding="utf-8")
        with pytest.raises(InputError) as err:
            read(path)
        assert str(err.value).startswith(f"{path}: line 2: invalid JSON at column 24 ("), name
        path.write_text('{"image_path": "a.png"}\n["a.png"]\n', encoding="utf-8")
        with pytest.raises(InputError, match=r": line 2: expected a JSON object, got an array$"):
            read(path)
    # a line separator inside a text value (valid JSON) does not split the record
    (tmp_path / "records.jsonl").write_text('{"title": "a\u2028b"}\n{"title": "c"}\n', encoding="utf-8")
    assert read_records(tmp_path / "records.jsonl") == [{"title": "a\u2028b"}, {"title": "c"}]


def test_the_tour_model_is_the_same_every_time_and_reads_texts_like_transformers(tmp_path):
    """python -m mlx_clip.demo.tiny_model: the same folder byte for byte from the same seed (a BPE
    trainer would break ties differently each run), and transformers' tokenizer gives its ids."""
    from mlx_clip.demo.tiny_model import build_tiny_clip
    from mlx_clip.models.clip import load

    first, second = build_tiny_clip(tmp_path / "a"), build_tiny_clip(tmp_path / "b")
    for name in ("mlx_model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    model = load(first)
    text = "Thumbs up sign, an emoji of hand-fingers-closed zzqx"
    ids = model.tokenizer([text])[0]
    assert ids[0] == model.tokenizer.bos_token_id and list(ids).index(model.tokenizer.eos_token_id) == 14
    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoTokenizer.from_pretrained(first)([text])["input_ids"][0]
    assert list(ids[:len(theirs)]) == theirs

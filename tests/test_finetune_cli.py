"""finetune.py end to end: the exported model works in sentence-transformers; bad input is one line."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlx_clip import finetune
from mlx_clip.errors import InputError
import mlx_clip
from test_llm_plugin import LLM, plugin_site  # noqa: F401  (plugin_site: the fixture llm runs with)

ROOT = Path(__file__).resolve().parents[1]


def _args(tiny_hf, manifest, runs, *extra):
    return ["--model", str(tiny_hf), "--manifest", str(manifest), "--runs-dir", str(runs),
            "--caption", "a {colour} {shape}", "--batch-size", "16", "--no-progress", *extra]


@pytest.fixture(scope="module")
def finished_run(tiny_hf, shapes_manifest, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert finetune.main(_args(tiny_hf, shapes_manifest, runs, "--name", "done", "--epochs", "2", "--lr", "1e-3",
                               "--label-field", "label", "--lock-text", "--unlock-last", "1")) == 0
    return runs / "done"


def test_run_folder_contents(finished_run):
    for name in ("config.json", "metrics.json", "loss.png", "recall.png", "model/model.safetensors",
                 "model/modules.json", "model/README.md", "checkpoints/latest"):
        assert (finished_run / name).is_file(), name
    config = json.loads((finished_run / "config.json").read_text())
    assert config["locks"]["lock_text"] and config["locks"]["unlock_last"] == 1 and config["captions"] == ["a {colour} {shape}"]
    assert config["resolved"]["total_steps"] == 2 * config["resolved"]["steps_per_epoch"]
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [0, 1, 2]
    assert metrics["best_epoch"] in (1, 2) and metrics["max_rss_bytes"] > 0
    for key in ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_mean_rank", "zero_shot_acc"):
        assert key in metrics["history"][0]


def test_convert_card_for_a_run_is_the_card_the_run_wrote(finished_run):
    """One owner of what a card says about a run (CardInfo.from_run): convert.py --push-to-hub of
    runs/NAME/model writes the card finetune wrote into runs/NAME/model/."""
    from mlx_clip.convert import card_info, parse_args
    from mlx_clip.outputs.model_card import build_card

    args = parse_args(["--to-hf", "--mlx-path", str(finished_run / "model"), "--hf-path", "unused"])
    card = str(build_card(card_info(args, mlx_clip.load(finished_run / "model"))))
    written = (finished_run / "model" / "README.md").read_text()
    assert "Measured on the held-out validation set" in written and "| epoch |" not in written
    assert "which picked the best epoch, so these figures flatter the model" in written
    assert card == written


def test_plan_counts_what_the_locks_train_and_describing_it_changes_nothing(tiny_hf, shapes_manifest, tmp_path,
                                                                           capsys):
    """--dry-run's "M trained" is what --lock-text --unlock-last 1 leaves trainable, and describe()
    only reads: the model's trainable parameters are the same after it."""
    from mlx_clip.settings import FinetuneConfig
    from mlx_clip.run.console import describe
    from mlx_clip.run.prepare import prepare
    from mlx_clip.models.trainable import LockConfig, apply_locks
    from mlx_clip.train.step import count_parameters
    from mlx_clip.wording import millions

    assert finetune.main(_args(tiny_hf, shapes_manifest, tmp_path, "--dry-run", "--epochs", "1", "--lock-text",
                               "--unlock-last", "1")) == 0
    locked = mlx_clip.load(tiny_hf)
    apply_locks(locked, LockConfig(lock_text=True, unlock_last=1))
    trained, total = count_parameters(locked.trainable_parameters()), count_parameters(locked.parameters())
    assert trained < total / 2
    assert f"({millions(total)} parameters, {millions(trained)} trained)" in capsys.readouterr().out

    prepared = prepare(FinetuneConfig(model=str(tiny_hf), manifest=str(shapes_manifest), batch_size=16,
                                      locks=LockConfig(lock_text=True, unlock_last=1)), say=lambda *_: None)
    ready = count_parameters(prepared.model.trainable_parameters())
    assert ready == trained  # prepare() applied the locks, before any Trainer is made
    describe(prepared, trained)
    assert count_parameters(prepared.model.trainable_parameters()) == ready  # describing changed nothing


def test_locked_text_tower_kept_except_last_layer(finished_run, tiny_hf):
    before, after = mlx_clip.load(tiny_hf), mlx_clip.load(finished_run / "model")
    from mlx.utils import tree_flatten
    b, a = dict(tree_flatten(before.parameters())), dict(tree_flatten(after.parameters()))
    assert np.array_equal(np.array(b["text_model.encoder.layers.0.mlp.fc1.weight"]),
                          np.array(a["text_model.encoder.layers.0.mlp.fc1.weight"]))
    assert np.array_equal(np.array(b["text_model.embeddings.token_embedding.weight"]),
                          np.array(a["text_model.embeddings.token_embedding.weight"]))
    for name in ("text_model.encoder.layers.1.mlp.fc1.weight", "text_projection.weight",
                 "vision_model.encoder.layers.0.mlp.fc1.weight"):
        assert not np.array_equal(np.array(b[name]), np.array(a[name])), name


def test_export_loads_in_sentence_transformers(finished_run, shapes_manifest):
    from sentence_transformers import SentenceTransformer

    model = mlx_clip.load(finished_run / "model")
    st = SentenceTransformer(str(finished_run / "model"), device="cpu")
    texts = ["a red circle", "a blue square"]
    image_path = shapes_manifest.parent / "images" / "s0001.png"
    ours = np.concatenate([model.embed_texts(texts), model.embed_images([image_path])])
    with Image.open(image_path) as image:
        theirs = np.concatenate([st.encode(texts), st.encode([image.convert("RGB")])])
    theirs = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
    cosine = (ours * theirs).sum(axis=1)
    assert cosine.min() >= 0.9999, cosine


def _run_weights(run: Path) -> list[str]:
    """Every weights file of a run folder outside checkpoints/."""
    return sorted(str(p.relative_to(run)) for p in run.rglob("*.safetensors")
                  if p.relative_to(run).parts[0] != "checkpoints")


def _vectors_agree(ours: np.ndarray, theirs: np.ndarray) -> None:
    theirs = np.asarray(theirs, np.float64)
    theirs = theirs / np.linalg.norm(theirs, axis=-1, keepdims=True)
    cosine = (ours * theirs).sum(axis=-1)
    assert cosine.min() >= 0.9999, cosine


def test_one_model_folder_every_consumer_takes(finished_run, shapes_manifest, plugin_site, tmp_path):
    """The best epoch is saved once, in model/, and transformers, sentence-transformers,
    mlx_clip.load and `llm mlx-clip register` all take that folder and embed the same."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import CLIPModel, CLIPProcessor
    from mlx.utils import tree_flatten

    assert _run_weights(finished_run) == ["model/model.safetensors"]
    assert not (finished_run / "export").exists()
    folder = finished_run / "model"
    model = mlx_clip.load(folder)
    params = dict(tree_flatten(model.parameters()))
    assert {str(v.dtype) for v in params.values()} == {"mlx.core.float32"}
    again = dict(tree_flatten(mlx_clip.load(model.save(tmp_path / "mlx")).parameters()))  # the MLX layout
    assert all(np.array_equal(np.array(params[k]), np.array(again[k])) for k in params)  # bit-identical
    texts, image_path = ["a red circle", "a blue square"], shapes_manifest.parent / "images" / "s0001.png"
    ours_text, ours_image = model.embed_texts(texts), model.embed_images([image_path])
    with Image.open(image_path) as opened:
        image = opened.convert("RGB")

    hf, processor = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    with torch.no_grad():
        out = hf(**processor(text=texts, images=[image], return_tensors="pt", padding=True))
    _vectors_agree(ours_text, out.text_embeds.numpy())
    _vectors_agree(ours_image, out.image_embeds.numpy())
    st = SentenceTransformer(str(folder), device="cpu")
    _vectors_agree(ours_text, st.encode(texts))
    _vectors_agree(ours_image, st.encode([image]))
    llm = LLM(tmp_path / "llm", plugin_site)
    llm("mlx-clip", "register", "tuned", folder)
    _vectors_agree(ours_text[:1], [llm.vector("embed", "-m", "mlx-clip/tuned", "-c", texts[0])])
    _vectors_agree(ours_image, [llm.vector("embed", "-m", "mlx-clip/tuned", "--binary", "-i", image_path)])


def _old_layout(finished_run: Path, old: Path) -> mlx_clip.CLIP:
    """A copy of the run as runs were written before one model folder: model/ in MLX layout and
    the HF copy with the card in export/."""
    shutil.copytree(finished_run, old)
    model = mlx_clip.load(old / "model")
    card = (old / "model" / "README.md").read_text()
    shutil.rmtree(old / "model")
    model.save(old / "model")
    mlx_clip.export_hf(model, old / "export")
    (old / "export" / "README.md").write_text(card)
    assert _run_weights(old) == ["export/model.safetensors", "model/mlx_model.safetensors"]
    return model


def test_old_layout_run_loads_registers_publishes_and_resumes_into_one_folder(finished_run, plugin_site,
                                                                             tmp_path, monkeypatch):
    import huggingface_hub
    from mlx_clip.outputs.run_paths import RunPaths

    old = tmp_path / "runs" / "old"
    model = _old_layout(finished_run, old)
    assert RunPaths(old).published_model == old / "export"
    assert RunPaths(finished_run).published_model == finished_run / "model"
    text = model.embed_texts(["a red circle"])
    _vectors_agree(text, mlx_clip.load(old / "model").embed_texts(["a red circle"]))
    llm = LLM(tmp_path / "llm", plugin_site)
    llm("mlx-clip", "register", "old", old / "model")
    _vectors_agree(text, [llm.vector("embed", "-m", "mlx-clip/old", "-c", "a red circle")])

    uploads = []
    monkeypatch.setattr(huggingface_hub, "create_repo",
                        lambda repo_id, **kw: huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}"))
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: uploads.append(kw))
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)
    finetune.publish(old, finetune.build_parser().parse_args(["--push-to-hub", "alice/old-run"]))
    assert [Path(u["folder_path"]) for u in uploads] == [old / "export"]

    assert finetune.main(["--runs-dir", str(old.parent), "--name", "old", "--resume", "--no-progress"]) == 0
    assert _run_weights(old) == ["model/model.safetensors"] and (old / "model" / "README.md").is_file()
    _vectors_agree(text, mlx_clip.load(old / "model").embed_texts(["a red circle"]))


def test_resume_refuses_a_changed_split(finished_run, tmp_path, capsys):
    """--resume recomputes the split from the manifest; a run trained on another split (its
    split.json differs) is refused with one line, and split.json is left as it was."""
    run = shutil.copytree(finished_run, tmp_path / "runs" / "moved")
    split = json.loads((run / "split.json").read_text())
    split["train"][0], split["val"][0] = split["val"][0], split["train"][0]
    (run / "split.json").write_text(json.dumps(split))
    before = (run / "split.json").read_text()
    line = _error_line(capsys, ["--runs-dir", str(run.parent), "--name", "moved", "--resume", "--no-progress"])
    assert "split.json" in line and "train/val" in line and "another --name" in line
    assert (run / "split.json").read_text() == before


def _error_line(capsys, argv):
    code = finetune.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_bad_inputs_give_one_line(tiny_hf, shapes_manifest, tmp_path, capsys):
    line = _error_line(capsys, _args(tiny_hf, shapes_manifest, tmp_path, "--caption", "{colour} from {perod}"))
    assert "{colour} from {perod}" in line and "'perod'" in line
    line = _error_line(capsys, _args(tiny_hf, shapes_manifest, tmp_path, "--batch-size", "1000"))
    assert "--batch-size 1000" in line and "training set" in line
    line = _error_line(capsys, ["--data", str(tmp_path / "nope.json"), "--model", str(tiny_hf)])
    assert "nope.json" in line and "not found" in line
    not_clip = tmp_path / "not_clip"
    not_clip.mkdir()
    (not_clip / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    line = _error_line(capsys, _args(not_clip, shapes_manifest, tmp_path))
    assert "not_clip" in line
    line = _error_line(capsys, _args(tiny_hf, shapes_manifest, tmp_path, "--label-field", "colr"))
    assert "colr" in line


def test_missing_and_corrupt_images_are_counted_not_fatal(tiny_hf, shapes_manifest, tmp_path, capsys):
    lines = shapes_manifest.read_text().splitlines()[:40]
    (tmp_path / "images").mkdir()
    for line in lines:
        name = json.loads(line)["image_path"]
        shutil.copyfile(shapes_manifest.parent / name, tmp_path / name)
    (tmp_path / "images" / "s0001.png").unlink()
    (tmp_path / "images" / "s0002.png").unlink()
    (tmp_path / "images" / "s0003.png").write_bytes(b"not an image")
    truncated = tmp_path / "images" / "s0004.png"
    Image.open(truncated).convert("RGB").resize((400, 300)).save(truncated.with_suffix(".jpg"))
    truncated.write_bytes(truncated.with_suffix(".jpg").read_bytes()[:2000])  # a cut-off download
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    assert finetune.main(_args(tiny_hf, manifest, tmp_path / "runs", "--epochs", "0", "--name", "s")) == 0
    out = capsys.readouterr().out
    assert out.count("skipped 4 records: 2 missing, 2 unreadable image") == 1
    assert "records: 36 with images" in out
    for name in ("images/" + p.name for p in (tmp_path / "images").glob("*.png")):
        (tmp_path / name).unlink()
    line = _error_line(capsys, _args(tiny_hf, manifest, tmp_path / "runs", "--name", "t"))
    assert "no usable images" in line and "40 missing" in line


def test_dry_run_prints_estimate_and_trains_nothing(tiny_hf, shapes_manifest, tmp_path, capsys):
    assert finetune.main(_args(tiny_hf, shapes_manifest, tmp_path, "--dry-run", "--epochs", "3")) == 0
    out = capsys.readouterr().out
    for text in ("records: 192", "captions: 12 captions, 0 longer than 77 tokens", "3 epochs x",
                 "estimated time per epoch", "estimated peak memory", "images/s", "nothing trained"):
        assert text in out, text
    assert not any(tmp_path.iterdir())


def test_dry_run_measures_full_batches_only(tiny_hf, shapes_manifest, tmp_path, capsys, monkeypatch):
    """96 training images in batches of 40 end with a short one of 16: a new shape, which compiled
    again inside the measurement (a 0.05 s step measured as 0.6 s) and counted as 40 images."""
    from mlx_clip.run import dry_run

    sizes = []
    step = dry_run.Trainer.step

    def counting(self, input_ids, pixels, **kwargs):
        sizes.append(int(pixels.shape[0]))
        return step(self, input_ids, pixels, **kwargs)

    monkeypatch.setattr(dry_run.Trainer, "step", counting)
    assert finetune.main(_args(tiny_hf, shapes_manifest, tmp_path, "--dry-run", "--batch-size", "40",
                               "--val-fraction", "0.25", "--test-fraction", "0.25")) == 0
    assert "x 3 steps of 40" in capsys.readouterr().out  # 40, 40 and a short 16
    assert sizes == [40, 40, 40]


def test_cli_exit_code_and_help(tmp_path):
    result = subprocess.run([sys.executable, "finetune.py", "--data", str(tmp_path / "missing.csv")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "missing.csv" in result.stderr
    help_text = subprocess.run([sys.executable, "finetune.py", "--help"], cwd=ROOT, capture_output=True,
                               text=True, timeout=120).stdout
    for flag in ("--sample", "--caption", "--lock-image", "--unlock-last", "--precision", "--resume",
                 "--dry-run", "--val-fraction", "--color-jitter", "--rotate", "--vflip", "--label-field"):
        assert flag in help_text, flag


def test_bfloat16_run_saves_float32_model(tiny_hf, shapes_manifest, tmp_path):
    assert finetune.main(_args(tiny_hf, shapes_manifest, tmp_path, "--name", "bf", "--epochs", "2",
                               "--precision", "bfloat16", "--lr", "1e-3", "--label-field", "label")) == 0
    import mlx.core as mx
    weights = mx.load(str(tmp_path / "bf" / "model" / "model.safetensors"))
    assert {v.dtype for v in weights.values()} == {mx.float32}
    metrics = json.loads((tmp_path / "bf" / "metrics.json").read_text())
    assert len(metrics["history"]) == 3 and metrics["history"][2]["train_loss"] < metrics["history"][1]["train_loss"] + 1


def test_metadata_file_is_sampled_and_fetched(tiny_hf, shapes_manifest, tmp_path):
    """--data RECORDS goes through fetch.py's machinery: a seeded sample, a manifest, then training."""
    records = [json.loads(line) for line in shapes_manifest.read_text().splitlines()]
    for record in records:  # local images: --path-field keeps them without downloading
        record["file"] = str(shapes_manifest.parent / record.pop("image_path"))
    data = tmp_path / "records.json"
    data.write_text(json.dumps({"objects": records}))
    out = tmp_path / "fetched"
    assert finetune.main(["--data", str(data), "--path-field", "file", "--sample", "60", "--stratify", "label",
                          "--out", str(out), "--model", str(tiny_hf), "--epochs", "1", "--batch-size", "8",
                          "--caption", "a {colour} {shape}", "--runs-dir", str(tmp_path / "runs"),
                          "--name", "fetched", "--no-progress"]) == 0
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 60 and len({m["label"] for m in manifest}) == 12  # every stratum drawn
    config = json.loads((tmp_path / "runs" / "fetched" / "config.json").read_text())
    assert config["resolved"]["records"] == 60
    card = (tmp_path / "runs" / "fetched" / "model" / "README.md").read_text()
    assert "a {colour} {shape}" in card and "stratified by label" in card


def test_register_and_push_after_the_run(tiny_hf, shapes_manifest, tmp_path, monkeypatch, capsys):
    """--register NAME puts the run's model in llm's registry; --push-to-hub uploads that folder
    (huggingface_hub patched at its boundary: the hub is not reachable from tests)."""
    import huggingface_hub

    uploads = []
    monkeypatch.setattr(huggingface_hub, "create_repo",
                        lambda repo_id, **kw: huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}"))
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: uploads.append(kw))
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm"))
    assert finetune.main(_args(tiny_hf, shapes_manifest, tmp_path, "--name", "pub", "--epochs", "1",
                               "--register", "shapes", "--push-to-hub", "alice/shapes-clip")) == 0
    from mlx_clip.registry import read_registry

    registry = read_registry(tmp_path / "llm")
    assert Path(registry["shapes"].source) == (tmp_path / "pub" / "model").resolve()
    (upload,) = uploads
    assert upload["repo_id"] == "alice/shapes-clip"
    assert Path(upload["folder_path"]) == tmp_path / "pub" / "model"
    assert "mlx-clip/shapes" in capsys.readouterr().out


def test_records_with_image_path_are_sampled_not_taken_whole(tiny_hf, shapes_manifest, tmp_path, capsys):
    """A records.jsonl whose records carry `image_path` is not mistaken for a manifest: --sample applies.
    The dry run fetches only what its 3 measured steps of 8 need, and estimates the sample's (40) and
    the whole catalogue's (192) epoch, with a 16 GB M1's as an estimate."""
    records = [json.loads(line) for line in shapes_manifest.read_text().splitlines()]
    data = tmp_path / "records.jsonl"
    data.write_text("".join(json.dumps({**r, "image_path": str(shapes_manifest.parent / r["image_path"])}) + "\n"
                            for r in records))
    (tmp_path / "fetched").mkdir()
    earlier = tmp_path / "fetched" / "manifest.jsonl"  # a sample fetched before: the dry run leaves its lists
    earlier.write_text("not touched\n")
    assert finetune.main(["--data", str(data), "--path-field", "image_path", "--sample", "40",
                          "--out", str(tmp_path / "fetched"), "--model", str(tiny_hf), "--dry-run",
                          "--batch-size", "8", "--caption", "a {colour} {shape}",
                          "--runs-dir", str(tmp_path / "runs")]) == 0
    assert len((tmp_path / "fetched" / "dry-run-manifest.jsonl").read_text().splitlines()) == 24
    assert earlier.read_text() == "not touched\n" and not (tmp_path / "fetched" / "failures.jsonl").exists()
    out = capsys.readouterr().out
    assert "fetching only the 24 images that 3 measured steps need (of the sample's 40)" in out
    # the plan is the run's (40 records), not the 24 measured ones
    from mlx_clip.data.dataset import split_sizes
    from mlx_clip.settings import FinetuneConfig
    train, val, _ = split_sizes(40, FinetuneConfig().val_fraction, 0.0)
    assert "records: the run draws a sample of 40 of 192 and fetches them; measured here on 24 of them" in out
    assert f"split: {train} train, {val} validation (picks the best epoch), no test set" in out
    assert "(the run's, before any image fails)" in out and f" x {-(-train // 8)} steps of 8 = " in out
    assert "the whole catalogue (192 records, --sample left out)" in out and "per epoch on this machine" in out
    assert "estimate for a 16 GB M1 (not measured)" in out and "GFLOP per training image" in out
    assert not (tmp_path / "runs").exists()
    assert finetune.main(["--data", str(data), "--path-field", "image_path", "--out", str(tmp_path / "fetched"),
                          "--model", str(tiny_hf), "--dry-run", "--batch-size", "8", "--caption", "a {colour} {shape}",
                          "--runs-dir", str(tmp_path / "runs")]) == 0  # no --sample: every record, not "a sample"
    assert "records: the run uses all 192 records and fetches them; measured here on 24" in capsys.readouterr().out


def test_review_regressions(tiny_hf, shapes_manifest, tmp_path, capsys):
    """Bad values fail up front with one line; --sample with --manifest is refused, not ignored."""
    base = ["--model", str(tiny_hf), "--manifest", str(shapes_manifest), "--runs-dir", str(tmp_path),
            "--dry-run", "--batch-size", "8", "--caption", "a {colour} {shape}"]
    for extra, expected in [(["--crop-min-area", "0"], "--crop-min-area"), (["--threads", "0"], "--threads"),
                            (["--sample", "10"], "--sample/--margin draw from --data")]:
        assert finetune.main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and expected in err, err


def test_stratified_split_keeps_the_validation_fraction(shapes_manifest):
    """Many small strata still give round(N * fraction) validation records in all."""
    from mlx_clip.data.dataset import image_key, read_manifest, split

    items = read_manifest(shapes_manifest)
    parts = split(items, 0.1, seed=0, stratify="id")  # one stratum per record
    train, val = parts.train, parts.val
    images = {image_key(i) for i in items}  # the fraction counts distinct images (two shapes repeat)
    assert len({image_key(i) for i in val}) == round(len(images) * 0.1) and len(train) + len(val) == len(items)


def test_resume_says_which_flags_it_ignores(tiny_hf, shapes_manifest, tmp_path, capsys):
    assert finetune.main(_args(tiny_hf, shapes_manifest, tmp_path, "--name", "r", "--epochs", "1")) == 0
    capsys.readouterr()
    assert finetune.main(_args(tiny_hf, shapes_manifest, tmp_path, "--name", "r", "--resume", "--epochs", "3")) == 0
    assert "ignored: --epochs 3" in capsys.readouterr().out


def test_a_missing_model_is_said_before_anything_is_fetched(tmp_path, capsys):
    """A typo in --model (or a hub id with no network) must not cost the user hours of downloads."""
    (tmp_path / "img").mkdir()
    lines = []
    for i in range(4):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "img" / f"{i}.png")
        lines.append(json.dumps({"id": f"r{i}", "title": f"red {i}", "path": f"img/{i}.png"}))
    (tmp_path / "records.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    code = finetune.main(["--data", str(tmp_path / "records.jsonl"), "--path-field", "path", "--batch-size", "2",
                          "--out", str(tmp_path / "out"), "--model", str(tmp_path / "no-such-model"),
                          "--runs-dir", str(tmp_path / "runs")])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'no-such-model'}: no such model folder"
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_register_name_is_checked_before_any_work(tiny_hf, shapes_manifest, tmp_path, monkeypatch, capsys):
    """--register NAME: a bad name, or one already registered (without --replace), stops the run
    before data or training; --replace lets it through to the run."""
    from mlx_clip.registry import register_model

    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm"))
    started = []
    monkeypatch.setattr(finetune, "run", lambda *a, **k: started.append(1) or (_ for _ in ()).throw(InputError("ran")))
    runs = tmp_path / "runs"
    assert finetune.main(_args(tiny_hf, shapes_manifest, runs, "--register", "no spaces")) == 2
    assert "not a valid model name" in capsys.readouterr().err
    register_model("taken", tiny_hf, validate=False)
    assert finetune.main(_args(tiny_hf, shapes_manifest, runs, "--register", "taken")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: taken: already registered for ") and "--replace" in err and not started
    assert finetune.main(_args(tiny_hf, shapes_manifest, runs, "--register", "taken", "--replace")) == 2
    assert started and "error: ran" in capsys.readouterr().err

"""Publishing: the model card (front matter and body), the folder that is uploaded, the upload as a
thin wrapper over huggingface_hub, no token ever written, and loading back from the hub cache offline.

Offline: `huggingface_hub.create_repo` / `upload_folder` are replaced at that boundary; the
"hub" the download test reads from is a cache folder laid out as huggingface_hub writes it.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import huggingface_hub
import mlx_clip
from mlx_clip.outputs import hub, model_card
from mlx_clip.errors import InputError
from mlx_clip.outputs.card_info import CardInfo
from mlx_clip.outputs.model_card import build_card, render, write_model_card

ROOT = Path(__file__).resolve().parents[1]
FAKE_TOKEN = "hf_FAKEtokenDoNotLeak0123456789abcdef"
REPO = "alice/coins-clip"

CONFIG = {
    "base_model": "openai/clip-vit-base-patch32", "epochs": 3, "learning_rate": 1e-05, "batch_size": 64,
    "optimizer": {"name": "adamw", "weight_decay": 0.1}, "seed": 0, "hub_token": FAKE_TOKEN,
    "caption_templates": ["{object_type} from the {period}", "a photo of {title}"],
}
METRICS = {
    "val_size": 157,
    "before": {"recall@1": {"value": 0.312, "ci95": [0.241, 0.389]}, "recall@5": 0.601,
               "mean_rank": 12.3, "zero_shot_accuracy": 0.44},
    "after": {"recall@1": {"value": 0.528, "ci95": [0.451, 0.604]}, "recall@5": 0.842,
              "mean_rank": 4.1, "zero_shot_accuracy": 0.71},
}
DATA = {
    "source": "data/records.json", "records": 15660, "images": 1530, "train": 1373, "val": 157,
    "sample": {"method": "stratified", "size": 1566, "seed": 0, "by": "period"},
    "labels": {"field": "period", "counts": {"Roman": 700, "Iron Age": 500, "Medieval": 366}},
}
FULL = dict(config=CONFIG, metrics=METRICS, data=DATA, repo_id=REPO, datasets=["alice/coin-photos"])


@pytest.fixture(scope="module")
def export(tiny_hf, tmp_path_factory) -> Path:
    """An HF export of the tiny model, as convert.py --to-hf / finetune write it."""
    return mlx_clip.export_hf(mlx_clip.load(tiny_hf), tmp_path_factory.mktemp("exp") / "export")


@pytest.fixture
def fake_hub(monkeypatch):
    """Record create_repo / upload_folder calls instead of talking to the hub."""
    calls = []

    def create_repo(repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(**kwargs):
        calls.append(("upload_folder", kwargs["repo_id"], kwargs))

    monkeypatch.setattr(huggingface_hub, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    return calls


# ---------------------------------------------------------------------------------------------
# The card


def test_card_metadata_and_body():
    card = build_card(FULL)
    meta = huggingface_hub.ModelCard(str(card)).data.to_dict()  # parsed back from the text
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "zero-shot-image-classification"
    assert meta["base_model"] == "openai/clip-vit-base-patch32"
    assert meta["license"] == "mit"  # the base model's licence
    assert meta["datasets"] == ["alice/coin-photos"]
    for tag in ["clip", "mlx", "mlx-clip-finetune", "sentence-transformers", "feature-extraction",
                "zero-shot-image-classification"]:
        assert tag in meta["tags"]
    text = card.text
    # metrics before -> after, with their intervals, and the validation-set size
    assert "| recall@1 | 0.312 [0.241, 0.389] | 0.528 [0.451, 0.604] | +0.216 |" in text
    assert "| mean_rank | 12.3 | 4.1 | -8.2 |" in text
    assert "| zero_shot_accuracy | 0.440 | 0.710 | +0.270 |" in text
    assert "157 images" in text and "95% interval" in text
    # data summary, templates, config
    for part in ["15660", "1566 records, stratified (by period, seed 0)", "1373 train / 157 validation",
                 "| Roman | 700 | 44.7% |", "`{object_type} from the {period}`", "`a photo of {title}`",
                 "| optimizer.weight_decay | 0.1 |", "| epochs | 3 |"]:
        assert part in text, part
    # usage from transformers, sentence-transformers, mlx_clip and llm, with the repo id
    for part in [f'CLIPModel.from_pretrained("{REPO}")', f'SentenceTransformer("{REPO}")',
                 f'mlx_clip.load("{REPO}")', f"llm mlx-clip register my-clip {REPO}"]:
        assert part in text, part
    assert "Intended use and limits" in text
    assert FAKE_TOKEN not in str(card) and "hub_token" not in str(card)


def test_bare_card_for_a_converted_model():
    card = build_card({"base_model": "openai/clip-vit-large-patch14"})
    assert card.data.license == "mit" and card.data.base_model == "openai/clip-vit-large-patch14"
    assert "converted with" in card.text and "Evaluation" not in card.text and "Training data" not in card.text
    assert model_card.PLACEHOLDER_REPO in card.text
    unknown = build_card(CardInfo(base_model="someone/some-clip"))
    assert unknown.data.license == "other" and "not known" in unknown.text
    assert build_card(CardInfo(base_model="someone/some-clip", license="Apache-2.0")).data.license == "apache-2.0"
    nothing = build_card(None)  # no information at all still makes a valid card
    assert nothing.data.base_model is None and nothing.data.license == "other"
    local = build_card({"base_model": "/nowhere/models/clip"})  # a local path is not hub metadata
    assert local.data.base_model is None and "`clip (a local path)`" in local.text and "/nowhere" not in local.text


def test_metrics_without_intervals_say_so():
    epochs = {"epochs": [{"epoch": 0, "recall@1": 0.30, "mean_rank": 9.0},
                         {"epoch": 1, "recall@1": 0.41, "mean_rank": 6.0},
                         {"epoch": 2, "recall@1": 0.47, "mean_rank": 5.0}], "n_val": 88}
    text = render({"metrics": epochs})
    assert "| recall@1 | 0.300 | 0.470 | +0.170 |" in text
    assert "No confidence interval was computed" in text and "88 images" in text
    assert "| 1 | 0.410 | 6.0 |" in text  # per-epoch table
    nested = {"epochs": [{"epoch": 1, "before": {"recall@1": 0.2}, "after": {"recall@1": 0.3}},
                         {"epoch": 2, "before": {"recall@1": 0.3}, "after": {"recall@1": 0.35}}]}
    assert "| recall@1 | 0.200 | 0.350 | +0.150 |" in render({"metrics": nested})
    sibling = {"before": {"recall@1": 0.2, "recall@1_ci95": [0.1, 0.3]}, "after": {"recall@1": 0.4}}
    assert "| recall@1 | 0.200 [0.100, 0.300] | 0.400 | +0.200 |" in render({"metrics": sibling})
    by_metric = {"recall@1": {"before": {"value": 0.2, "ci95": [0.1, 0.3]}, "after": 0.4}, "val_size": 50}
    assert "| recall@1 | 0.200 [0.100, 0.300] | 0.400 | +0.200 |" in render({"metrics": by_metric})


def test_card_gives_no_interval_on_a_handful_and_no_row_to_a_count():
    """As the report and console: two image-to-image queries (or 12 validation images) bootstrap
    to intervals that say nothing, so the card shows the points and says why; i2i_queries is how
    many queries there were, not a score; a mean rank keeps one decimal even at 1."""
    side = {"mean_R@1": 0.5, "mean_R@1_ci95": [0.4, 0.6], "i2i_R@1": 1.0, "i2i_R@1_ci95": [1.0, 1.0],
            "i2i_mean_rank": 1.0, "i2i_queries": 2}
    text = render({"metrics": {"before": dict(side, **{"i2i_R@1": 0.0, "i2i_R@1_ci95": [0.0, 0.0]}), "after": side,
                               "val_size": 61}})
    assert "| mean_R@1 | 0.500 [0.400, 0.600] | 0.500 [0.400, 0.600] | +0.000 |" in text
    assert "| i2i_R@1 | 0.000 | 1.000 | +1.000 |" in text and "| i2i_mean_rank | 1.0 | 1.0 | +0.0 |" in text
    assert "No interval on i2i_R@1: too few to tell on 2 items (fewer than 20)." in text
    assert "i2i_queries" not in text and "Brackets give the 95% interval" in text
    few = render({"metrics": {"before": side, "after": side, "val_size": 12}})
    assert "| mean_R@1 | 0.500 | 0.500 | +0.000 |" in few and "Brackets give" not in few


def test_card_split_names_the_held_out_test_set():
    assert "- Split: 479 train / 60 validation / 61 test (held out, never trained on)" in render(
        {"data": {"train": 479, "val": 60, "test": 61}})
    assert "- Split: 90 train / 10 validation\n" in render({"data": {"train": 90, "val": 10, "test": 0}})


def test_base_licence_read_from_local_card(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: apache-2.0\n---\n# base\n")
    assert build_card({"base_model": str(tmp_path)}).data.license == "apache-2.0"


def test_card_from_run_folder_and_bad_info(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    info = CardInfo.from_run(tmp_path, repo_id=REPO)
    assert info.config["epochs"] == 3 and info.metrics["val_size"] == 157 and info.repo_id == REPO
    assert "| recall@5 | 0.601 | 0.842 | +0.241 |" in render(info)
    with pytest.raises(InputError, match="unknown field"):
        render({"base": "x"})
    with pytest.raises(InputError, match="not a hub licence id"):
        render({"license": "MIT License"})


# ---------------------------------------------------------------------------------------------
# The folder that is uploaded


def test_uploaded_folder_loads_in_transformers_and_sentence_transformers(export, tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import CLIPModel, CLIPProcessor

    folder = shutil.copytree(export, tmp_path / "export")
    (folder / "model.safetensors.part.safetensors").write_bytes(b"half-written")  # left out of uploads
    write_model_card(folder, FULL)
    files = hub.files_to_upload(folder)
    optional = {"vocab.json", "merges.txt", "special_tokens_map.json"}  # tokenizer files older versions write
    assert set(files) - optional == {
        "README.md", "config.json", "config_sentence_transformers.json", "model.safetensors",
        "modules.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
    }, files
    CLIPModel.from_pretrained(folder)
    CLIPProcessor.from_pretrained(folder)
    st = SentenceTransformer(str(folder), device="cpu")
    assert st.encode(["a bronze coin"]).shape[-1] == 16


# ---------------------------------------------------------------------------------------------
# Upload: a thin wrapper over huggingface_hub


def test_push_calls_create_repo_and_upload_folder(export, tmp_path, fake_hub):
    folder = shutil.copytree(export, tmp_path / "export")
    url = hub.push_to_hub(folder, REPO, card={"base_model": "openai/clip-vit-base-patch32"})
    assert url == f"https://huggingface.co/{REPO}"
    (_, repo, create), (_, repo2, upload) = fake_hub
    assert repo == repo2 == REPO
    assert create["private"] is True and create["exist_ok"] is True and create["token"] is None
    assert upload["folder_path"] == str(folder) and upload["token"] is None
    assert upload["repo_type"] == "model" and "README.md" in upload["allow_patterns"]
    readme = (folder / "README.md").read_text()
    assert f'mlx_clip.load("{REPO}")' in readme and "base_model: openai/clip-vit-base-patch32" in readme

    fake_hub.clear()
    hub.push_to_hub(folder, REPO, private=False)
    assert fake_hub[0][2]["private"] is False


def test_push_keeps_a_card_written_by_the_run(export, tmp_path, fake_hub):
    folder = shutil.copytree(export, tmp_path / "export")
    write_model_card(folder, {"config": CONFIG, "metrics": METRICS, "data": DATA})  # as finetune does
    assert model_card.PLACEHOLDER_REPO in (folder / "README.md").read_text()
    hub.push_to_hub(folder, REPO)
    text = (folder / "README.md").read_text()
    assert model_card.PLACEHOLDER_REPO not in text and f'SentenceTransformer("{REPO}")' in text
    assert "| recall@1 | 0.312 [0.241, 0.389]" in text
    (folder / "README.md").write_text("# my own card\n")
    hub.push_to_hub(folder, REPO)
    assert (folder / "README.md").read_text() == "# my own card\n"  # the user's own card is left alone


def _http_error(status):
    import httpx2

    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    response = httpx2.Response(status, request=request, text=f"error {status}")
    return huggingface_hub.errors.HfHubHTTPError(f"{status} Client Error: for url {request.url}", response=response)


@pytest.mark.parametrize("case", ["no_token", "401", "403", "network", "bad_repo", "not_export"])
def test_push_errors_are_one_line(export, tmp_path, fake_hub, monkeypatch, case):
    import httpx2

    folder = shutil.copytree(export, tmp_path / "export")
    repo, expect = REPO, []
    if case == "no_token":
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
        expect = ["not logged in", "hf auth login", "HF_TOKEN"]
    elif case in ("401", "403"):
        def refuse(repo_id, **kwargs):
            raise _http_error(int(case))
        monkeypatch.setattr(huggingface_hub, "create_repo", refuse)
        expect = ["401", "hf auth login"] if case == "401" else ["403", "write access", REPO]
    elif case == "network":
        def unreachable(**kwargs):
            raise httpx2.ConnectError(f"[Errno -2] Name or service not known (token {FAKE_TOKEN})")
        monkeypatch.setattr(huggingface_hub, "upload_folder", unreachable)
        expect = ["could not reach the Hugging Face hub", "ConnectError", "***"]
    elif case == "bad_repo":
        repo, expect = "coins-clip", ["OWNER/NAME"]
    elif case == "not_export":
        (folder / "model.safetensors").unlink()
        expect = ["not a Hugging Face export", "model.safetensors", "--format hf"]
    with pytest.raises(InputError) as err:
        hub.push_to_hub(folder, repo)
    message = str(err.value)
    assert "\n" not in message and FAKE_TOKEN not in message
    for part in expect:
        assert part in message, (part, message)


# ---------------------------------------------------------------------------------------------
# convert.py --push-to-hub, and no token written anywhere


def _all_text(folder: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file())


def test_convert_push_writes_no_token(tiny_hf, tmp_path, fake_hub, capsys, caplog):
    import convert

    def main(args):
        return convert.main([str(a) for a in args])

    run = tmp_path / "runs" / "demo"
    assert main(["--hf-path", tiny_hf, "--mlx-path", run / "model"]) == 0
    (run / "config.json").write_text(json.dumps({**CONFIG, "note": f"pushed with {FAKE_TOKEN}"}))
    (run / "metrics.json").write_text(json.dumps(METRICS))
    out = tmp_path / "export"
    caplog.set_level("DEBUG")
    code = main(["--to-hf", "--mlx-path", run / "model", "--hf-path", out,
                         "--push-to-hub", REPO, "--license", "cc-by-4.0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"uploaded {out}" in captured.out and "private" in captured.out
    (_, _, create), (_, _, upload) = fake_hub
    assert create["private"] is True and upload["folder_path"] == str(out)
    card = huggingface_hub.ModelCard.load(out / "README.md")
    assert card.data.license == "cc-by-4.0" and "| recall@1 | 0.312" in card.text  # run info picked up
    for where, text in [("export", _all_text(out)), ("mlx model", _all_text(run / "model")),
                        ("stdout", captured.out), ("stderr", captured.err), ("logs", caplog.text)]:
        assert FAKE_TOKEN not in text, f"token in {where}"

    assert main(["--hf-path", tiny_hf, "--mlx-path", tmp_path / "m", "--push-to-hub", REPO]) == 2
    assert "add --format hf" in capsys.readouterr().err


def test_cli_push_offline_is_one_line_and_leaks_nothing(tiny_hf, tmp_path):
    mlx_dir, out = tmp_path / "mlx", tmp_path / "export"
    env = {**os.environ, "HF_TOKEN": FAKE_TOKEN, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    env.pop("HF_HUB_CACHE", None)
    convert = [sys.executable, str(ROOT / "convert.py")]
    assert subprocess.run([*convert, "--hf-path", tiny_hf, "--mlx-path", mlx_dir], env=env,
                          capture_output=True, cwd=ROOT).returncode == 0
    done = subprocess.run([*convert, "--to-hf", "--mlx-path", mlx_dir, "--hf-path", out, "--push-to-hub", REPO,
                           "--public"], env=env, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.strip().count("\n") == 0, done.stderr
    assert "HF_HUB_OFFLINE" in done.stderr
    assert (out / "README.md").is_file()  # the card was written locally before the upload
    home = tmp_path / "hf_home"
    for where, text in [("stdout", done.stdout), ("stderr", done.stderr), ("export", _all_text(out)),
                        ("HF_HOME", _all_text(home) if home.exists() else "")]:
        assert FAKE_TOKEN not in text, f"token in {where}"


# ---------------------------------------------------------------------------------------------
# Download once, then load from the cache offline


def test_load_from_hub_cache_offline(tiny_hf, tmp_path, monkeypatch):
    """Push to a fake hub that stores the upload as the hub cache lays out a downloaded snapshot;
    then a fresh process with HF_HUB_OFFLINE=1 loads the repo id from that cache."""
    cache, commit = tmp_path / "hub_cache", "0123456789abcdef0123456789abcdef01234567"

    def upload_folder(*, repo_id, folder_path, **kwargs):
        repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
        shutil.copytree(folder_path, repo_dir / "snapshots" / commit)
        (repo_dir / "refs").mkdir()
        (repo_dir / "refs" / "main").write_text(commit)

    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, **kw: f"https://huggingface.co/{repo_id}")
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    model = mlx_clip.load(tiny_hf)
    folder = mlx_clip.export_hf(model, tmp_path / "export")
    hub.push_to_hub(folder, REPO, card={"base_model": "openai/clip-vit-base-patch32"})

    script = (
        "import json, sys, mlx_clip\n"
        f"m = mlx_clip.load({REPO!r})\n"
        "print(json.dumps(m.embed_texts(['a bronze coin']).tolist()))\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "home")}
    env.pop("HF_TOKEN", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    got = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(got, model.embed_texts(["a bronze coin"]), atol=1e-6)

    # And a repo that is not in the cache fails offline with the one-line message.
    env["PYTHONPATH"] = str(ROOT)
    missing = subprocess.run([sys.executable, "-c", "import mlx_clip; mlx_clip.load('alice/not-cached')"],
                             env=env, capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode != 0 and "offline, or not in the cache" in missing.stderr


def test_card_after_is_the_best_epoch_not_the_last():
    """finetune.py keeps the best epoch's weights, so the card's "after" must be that epoch."""
    from mlx_clip.outputs.card_metrics import split_metrics

    metrics = {"best_epoch": 1, "history": [
        {"epoch": 0, "mean_R@1": 0.10, "train_images_per_s": None},
        {"epoch": 1, "mean_R@1": 0.40, "train_loss": 1.0, "train_images_per_s": 400.0},
        {"epoch": 2, "mean_R@1": 0.30, "train_loss": 0.5, "train_images_per_s": 1300.0},
    ]}
    before, after, _ = split_metrics(metrics)
    assert before["mean_R@1"].value == 0.10 and after["mean_R@1"].value == 0.40
    assert "train_images_per_s" not in after and "train_loss" not in after

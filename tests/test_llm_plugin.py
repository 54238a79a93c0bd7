"""The llm plugin, driven through the real `llm` CLI in subprocesses.

Each CLI call gets a temporary LLM_USER_PATH. The plugin is made discoverable without
`pip install -e .`: a throwaway `mlx_clip_finetune-*.dist-info` whose entry points are read
from pyproject.toml goes first on PYTHONPATH, followed by this checkout, and
LLM_LOAD_PLUGINS names it, so the tests always run this checkout's code (an editable
install may point at another worktree) and no other installed llm plugin gets loaded. A second
throwaway plugin, `fake-embed`, registers an offline text embedding model `fake-embed`: the
model of "another plugin" that a broken registry must leave working.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mlx_clip
from mlx_clip import registry
from mlx_clip.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
DIST_NAME = "mlx-clip-finetune"
OTHER_PLUGIN = "fake-embed"
FAKE_PLUGIN_SOURCE = '''
import llm


class FakeEmbed(llm.EmbeddingModel):
    model_id = "fake-embed"

    def embed_batch(self, items, key=None):
        return ([float(len(text)), float(text.count("a")), 1.0] for text in items)


@llm.hookimpl
def register_embedding_models(register):
    register(FakeEmbed())
'''

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None


def pyproject() -> dict:
    if tomllib is None:
        pytest.skip("tomllib needs Python 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def llm_entry_points() -> dict[str, str]:
    if tomllib is None:  # the value pyproject.toml declares (checked on 3.11+)
        return {"mlx_clip": "mlx_clip.llm_plugin"}
    return pyproject()["project"]["entry-points"]["llm"]


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


class LLM:
    """`python -m llm ...` with its own user directory and only this plugin loaded."""

    def __init__(self, user_dir: Path, site: Path):
        self.user_dir = user_dir
        self.env = dict(os.environ)
        self.env.update(
            LLM_USER_PATH=str(user_dir),
            LLM_LOAD_PLUGINS=f"{DIST_NAME},{OTHER_PLUGIN}",
            PYTHONPATH=os.pathsep.join([str(site), str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
            HF_HUB_OFFLINE="1",
            PYTHONWARNINGS="ignore",
        )

    def __call__(self, *args, ok: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "llm", *map(str, args)], env=self.env,
                                capture_output=True, text=True, timeout=120)
        if ok and result.returncode != 0:
            raise AssertionError(f"llm {' '.join(map(str, args))} failed ({result.returncode}):\n{result.stderr}")
        return result

    def vector(self, *args) -> list[float]:
        return json.loads(self(*args).stdout)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one clear error line a failure must print: non-zero exit, no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("Warning:")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    version = mlx_clip.__version__
    dist = site / f"{DIST_NAME.replace('-', '_')}-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST_NAME}\nVersion: {version}\n")
    lines = "".join(f"{name} = {target}\n" for name, target in llm_entry_points().items())
    (dist / "entry_points.txt").write_text("[llm]\n" + lines)
    other = site / "fake_embed-0.1.dist-info"
    other.mkdir()
    (other / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {OTHER_PLUGIN}\nVersion: 0.1\n")
    (other / "entry_points.txt").write_text("[llm]\nfake_embed = fake_embed_plugin\n")
    (site / "fake_embed_plugin.py").write_text(FAKE_PLUGIN_SOURCE)
    return site


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_hf):
    """base: the tiny HF folder; tuned: its MLX copy with perturbed weights (a stand-in fine-tune)."""
    import mlx.core as mx
    from mlx.utils import tree_map

    base = mlx_clip.load(tiny_hf)
    tuned = mlx_clip.load(tiny_hf)
    mx.random.seed(3)
    tuned.update(tree_map(lambda w: w + 0.2 * mx.random.normal(w.shape).astype(w.dtype) * mx.abs(w).mean(),
                          tuned.parameters()))
    tuned_folder = tuned.save(tmp_path_factory.mktemp("tuned") / "model")
    return {"base": (tiny_hf, base), "tuned": (tuned_folder, mlx_clip.load(tuned_folder))}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i, name in enumerate(["a", "b", "c", "d"]):
        pixels = rng.integers(0, 256, (36 + 4 * i, 48, 3), dtype=np.uint8)
        pixels[: 10 * (i + 1)] = (60 * i, 255 - 60 * i, 128)  # distinct content, not just noise
        Image.fromarray(pixels).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory, plugin_site, models, photos) -> LLM:
    """Both models registered and the photos embedded with base into the collection `photos`."""
    llm = LLM(tmp_path_factory.mktemp("llm_user"), plugin_site)
    for name, (folder, _) in models.items():
        llm("mlx-clip", "register", name, folder)
    llm("embed-multi", "photos", "--files", photos, "*.png", "--binary", "-m", "mlx-clip/base")
    return llm


@pytest.fixture
def fresh(tmp_path, plugin_site) -> LLM:
    return LLM(tmp_path / "llm_user", plugin_site)


def test_pyproject_installs_the_package_and_the_llm_plugin():
    project = pyproject()
    assert project["project"]["name"] == DIST_NAME
    assert project["project"]["entry-points"]["llm"] == {"mlx_clip": "mlx_clip.llm_plugin"}
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["mlx_clip*"]  # with train/, report/
    requirements = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    names = lambda specs: sorted(s.replace(" ", "").replace("'", '"') for s in specs if s)  # noqa: E731
    assert names(project["project"]["dependencies"]) == names(requirements)


def test_register_list_and_embed_models(world, models):
    listed = world("mlx-clip", "list").stdout
    for name, (folder, _) in models.items():
        assert f"mlx-clip/{name}  {Path(folder).resolve()}" in listed
    embed_models = world("embed-models").stdout
    assert "mlx-clip/base" in embed_models and "mlx-clip/tuned" in embed_models
    stored = json.loads((world.user_dir / registry.REGISTRY_FILE).read_text())
    assert all(Path(m["source"]).is_absolute() for m in stored["models"].values())


def test_text_embedding_equals_mlx(world, models):
    text = "a photo of a red bicycle"
    vector = world.vector("embed", "-m", "mlx-clip/base", "-c", text)
    expected = models["base"][1].embed_texts([text])[0]
    assert len(vector) == expected.shape[0]
    assert cosine(vector, expected) >= 0.9999


def test_image_embedding_equals_mlx(world, models, photos):
    for name in ("base", "tuned"):
        vector = world.vector("embed", "-m", f"mlx-clip/{name}", "--binary", "-i", photos / "c.png")
        assert cosine(vector, models[name][1].embed_images([photos / "c.png"])[0]) >= 0.9999


def test_embed_multi_then_similar_ranks_the_same_image_first(world, photos):
    collections = json.loads(world("collections", "list", "--json").stdout)
    assert [(c["name"], c["model"], c["num_embeddings"]) for c in collections] == [("photos", "mlx-clip/base", 4)]
    for name in ("b.png", "d.png"):
        lines = world("similar", "photos", "-i", photos / name, "--binary").stdout.splitlines()
        hits = [json.loads(line) for line in lines]
        assert [h["id"] for h in hits][0] == name
        assert hits[0]["score"] >= 0.9999 and len(hits) == 4


def test_two_models_give_different_embeddings(world, photos):
    base = world.vector("embed", "-m", "mlx-clip/base", "--binary", "-i", photos / "a.png")
    tuned = world.vector("embed", "-m", "mlx-clip/tuned", "--binary", "-i", photos / "a.png")
    assert cosine(base, tuned) < 0.99


def test_register_rejects_what_is_not_a_model(fresh, photos, tmp_path):
    line = error_line(fresh("mlx-clip", "register", "pics", photos, ok=False))
    assert "pics" in line and str(photos.resolve()) in line and "config.json" in line
    line = error_line(fresh("mlx-clip", "register", "pic", photos / "a.png", ok=False))
    assert "a.png" in line and "is a file" in line
    missing = tmp_path / "no" / "such" / "folder"
    line = error_line(fresh("mlx-clip", "register", "gone", missing, ok=False))
    assert str(missing) in line
    line = error_line(fresh("mlx-clip", "register", "bad name", photos, ok=False))
    assert "'bad name'" in line
    assert "No models registered" in fresh("mlx-clip", "list").stdout


def test_unknown_model_names(fresh):
    error_line(fresh("embed", "-m", "mlx-clip/nope", "-c", "hello", ok=False))  # llm's own message
    line = error_line(fresh("mlx-clip", "remove", "nope", ok=False))
    assert "nope" in line and "no model registered" in line


def test_corrupt_image_in_embed_multi_names_the_file(world, photos, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.png").write_bytes((photos / "a.png").read_bytes())
    (folder / "broken.png").write_bytes((photos / "b.png").read_bytes()[:80])  # truncated PNG
    line = error_line(world("embed-multi", "mixed", "--files", folder, "*.png", "--binary",
                            "-m", "mlx-clip/base", ok=False))
    assert str(folder / "broken.png") in line and "not a readable image" in line and "mlx-clip/base" in line
    assert "run again" in line
    (folder / "broken.png").write_bytes(b"this is a text file")
    line = error_line(world("embed", "-m", "mlx-clip/base", "--binary", "-i", folder / "broken.png", ok=False))
    assert "not a readable image" in line


def test_remove_and_replace(fresh, models, photos):
    base, tuned = models["base"][0], models["tuned"][0]
    fresh("mlx-clip", "register", "mine", base)
    fresh("embed-multi", "pics", "--files", photos, "*.png", "--binary", "-m", "mlx-clip/mine")
    line = error_line(fresh("mlx-clip", "register", "mine", tuned, ok=False))
    assert "already registered" in line and "--replace" in line
    replaced = fresh("mlx-clip", "register", "mine", tuned, "--replace")
    assert "collections embedded with mlx-clip/mine (pics)" in replaced.stderr
    removed = fresh("mlx-clip", "remove", "mlx-clip/mine")
    assert "Removed mlx-clip/mine" in removed.stdout and "(pics)" in removed.stderr
    assert "mlx-clip/mine" not in fresh("embed-models").stdout
    assert Path(tuned).is_dir()  # the files stay


def other_plugin_still_works(llm: LLM) -> subprocess.CompletedProcess:
    """`llm embed-models` lists the other plugin's model and `llm embed -m fake-embed` embeds."""
    listed = llm("embed-models")
    assert "fake-embed" in listed.stdout and "Traceback" not in listed.stderr
    assert llm.vector("embed", "-m", "fake-embed", "-c", "banana") == [6.0, 3.0, 1.0]
    return listed


def test_broken_registry_file_does_not_break_llm(fresh):
    fresh.user_dir.mkdir(parents=True, exist_ok=True)
    (fresh.user_dir / registry.REGISTRY_FILE).write_text("{not json")
    result = other_plugin_still_works(fresh)
    assert registry.REGISTRY_FILE in result.stderr and "not JSON" in result.stderr
    line = error_line(fresh("mlx-clip", "list", ok=False))
    assert registry.REGISTRY_FILE in line


BAD_ENTRIES = {
    "dated": {"source": "/models/x", "kind": "local", "registered": "2024-05-01"},
    "nosource": {"kind": "local", "registered": 1.0},
    "listed": ["/models/x"],
    "relative": {"source": "models/x", "kind": "local"},
    "oddkind": {"source": "/models/x", "kind": "folder"},
    "aliased": {"source": "/models/x", "kind": "local", "aliases": "short"},
    "bad name": {"source": "/models/x", "kind": "local"},
}


def test_bad_registry_entries_warn_once_and_the_good_ones_are_served(fresh, models):
    base = models["base"][0]
    fresh("mlx-clip", "register", "good", base)
    path = fresh.user_dir / registry.REGISTRY_FILE
    data = json.loads(path.read_text())
    data["models"].update(BAD_ENTRIES)
    path.write_text(json.dumps(data))

    listed = other_plugin_still_works(fresh)
    assert "mlx-clip/good" in listed.stdout
    warnings = [line for line in listed.stderr.splitlines() if line.startswith("Warning: mlx-clip:")]
    assert len(warnings) == len(BAD_ENTRIES), listed.stderr
    for name in BAD_ENTRIES:
        assert f"mlx-clip/{name}" not in listed.stdout
        assert sum(f"entry {name!r}" in w and str(path) in w for w in warnings) == 1, (name, warnings)
    assert "'registered' is \"2024-05-01\", not a number" in listed.stderr
    assert "'source' is missing" in listed.stderr
    vector = fresh.vector("embed", "-m", "mlx-clip/good", "-c", "a red bicycle")
    assert cosine(vector, models["base"][1].embed_texts(["a red bicycle"])[0]) >= 0.9999

    fresh("mlx-clip", "register", "more", base)  # rewriting the file keeps the hand-edited entries
    stored = json.loads(path.read_text())["models"]
    assert {name: stored[name] for name in BAD_ENTRIES} == BAD_ENTRIES and "more" in stored
    assert "Removed the unreadable entry dated" in fresh("mlx-clip", "remove", "dated").stdout
    assert "dated" not in json.loads(path.read_text())["models"]
    assert "mlx-clip/more" in fresh("mlx-clip", "list").stdout


def test_each_bad_entry_warns_once_per_process(tmp_path, monkeypatch, capsys):
    """llm may ask for the embedding models more than once in one command: one warning per entry."""
    from mlx_clip import llm_plugin

    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path))
    monkeypatch.setattr(llm_plugin, "_warned", set())
    (tmp_path / registry.REGISTRY_FILE).write_text(json.dumps({"models": BAD_ENTRIES}))
    served = []
    for _ in range(3):
        llm_plugin.register_embedding_models(lambda model, aliases=(): served.append(model))
    warnings = capsys.readouterr().err.splitlines()
    assert served == [] and len(warnings) == len(BAD_ENTRIES) == len(set(warnings))


def test_register_loads_the_model_first_unless_lazy(fresh, tiny_hf, tmp_path):
    line = error_line(fresh("mlx-clip", "register", "x", "nosuch/repo", ok=False))  # offline: HF_HUB_OFFLINE
    assert "cannot register x" in line and "nosuch/repo" in line
    line = error_line(fresh("mlx-clip", "register", "x", "/no/such/folder", ok=False))
    assert "/no/such/folder" in line
    no_tokenizer = tmp_path / "no_tokenizer"  # loads, but cannot embed a string
    no_tokenizer.mkdir()
    for name in ["config.json", "model.safetensors", "preprocessor_config.json"]:
        (no_tokenizer / name).write_bytes((tiny_hf / name).read_bytes())
    line = error_line(fresh("mlx-clip", "register", "x", no_tokenizer, ok=False))
    assert "tokenizer" in line
    assert not (fresh.user_dir / registry.REGISTRY_FILE).exists()

    done = fresh("mlx-clip", "register", "later", "nosuch/repo", "--lazy")
    assert "not loaded yet (--lazy)" in done.stdout
    fresh("mlx-clip", "register", "half", no_tokenizer, "--lazy")
    assert sorted(registry.read_registry(fresh.user_dir)) == ["half", "later"]


def test_aliases(fresh, models):
    base, tuned = models["base"][0], models["tuned"][0]
    done = fresh("mlx-clip", "register", "base", base, "-a", "b", "--alias", "clip-base")
    assert "also called b, clip-base" in done.stdout
    text = "a photo of a red bicycle"
    expected = models["base"][1].embed_texts([text])[0]
    for name in ("b", "clip-base"):
        assert cosine(fresh.vector("embed", "-m", name, "-c", text), expected) >= 0.9999
    line = error_line(fresh("mlx-clip", "register", "tuned", tuned, "-a", "b", ok=False))
    assert "'b'" in line and "mlx-clip/base" in line
    fresh("mlx-clip", "register", "base", base)  # no -a: the aliases stay
    assert "aliases: b, clip-base" in fresh("mlx-clip", "list").stdout
    fresh("mlx-clip", "register", "base", base, "-a", "c")
    assert registry.get_model("base", fresh.user_dir).aliases == ("c",)


def test_long_caption_is_truncated_not_an_error(world, models):
    caption = "word " * 200
    vector = world.vector("embed", "-m", "mlx-clip/base", "-c", caption)
    assert cosine(vector, models["base"][1].embed_texts([caption])[0]) >= 0.9999
    assert cosine(vector, models["base"][1].embed_texts(["word " * 75])[0]) >= 0.9999  # the first 75 count


# The registry and the embedding model in-process: what finetune.py --register calls.

def test_register_model_stores_absolute_paths_and_hub_ids(tmp_path, tiny_hf, monkeypatch):
    monkeypatch.chdir(tiny_hf.parent)
    entry = registry.register_model("base", tiny_hf.name, directory=tmp_path)
    assert entry.source == str(tiny_hf.resolve()) and entry.kind == "local" and entry.model_id == "mlx-clip/base"
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError, match="nosuch/repo: not a local folder"):  # loaded first: offline, fails
        registry.register_model("b32", "nosuch/repo", directory=tmp_path)
    hub = registry.register_model("b32", "openai/clip-vit-base-patch32", validate=False, directory=tmp_path)
    assert hub.kind == "hub" and hub.source == "openai/clip-vit-base-patch32"
    assert sorted(registry.read_registry(tmp_path)) == ["b32", "base"]
    registry.register_model("base", tiny_hf, directory=tmp_path)  # same folder again: fine
    with pytest.raises(InputError, match="already registered"):
        registry.register_model("base", tmp_path, validate=False, directory=tmp_path)
    assert registry.register_model("base", tmp_path, replace=True, validate=False, directory=tmp_path).source \
        == str(tmp_path.resolve())
    assert registry.remove_model("mlx-clip/b32", directory=tmp_path).name == "b32"
    with pytest.raises(InputError, match="no model registered"):
        registry.get_model("b32", directory=tmp_path)
    assert not list(tmp_path.glob("*.part"))


def test_registry_lives_in_llm_user_path(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "u"))
    assert registry.registry_path() == tmp_path / "u" / registry.REGISTRY_FILE


def test_mixed_batch_keeps_order_and_loads_once(models, photos):
    from mlx_clip.llm_plugin import MLXClipEmbeddingModel

    folder, clip = models["base"]
    entry = registry.RegisteredModel("x", str(Path(folder).resolve()), "local")
    model, again = MLXClipEmbeddingModel(entry), MLXClipEmbeddingModel(entry)
    items = ["a dog", (photos / "a.png").read_bytes(), "a cat", (photos / "b.png").read_bytes()]
    vectors = list(model.embed_multi(items, batch_size=3))
    assert model.clip() is again.clip()
    expected = [clip.embed_texts(["a dog"])[0], clip.embed_images([photos / "a.png"])[0],
                clip.embed_texts(["a cat"])[0], clip.embed_images([photos / "b.png"])[0]]
    for got, want in zip(vectors, expected):
        assert cosine(got, want) >= 0.9999


def test_llm_clip_users_can_load_the_exported_folder(models, photos, tmp_path):
    """What the README tells llm-clip users: SentenceTransformer(<convert.py --to-hf folder>) gives
    the same vectors as mlx-clip/NAME (one modality per encode call, as sentence-transformers asks)."""
    from sentence_transformers import SentenceTransformer

    folder, clip = models["tuned"]
    exported = mlx_clip.export_hf(mlx_clip.load(folder), tmp_path / "export")
    st = SentenceTransformer(str(exported), device="cpu")
    with Image.open(photos / "d.png") as image:
        image_vector = st.encode([image.convert("RGB")])[0]
    text_vector = st.encode(["a photo of a dog"])[0]
    assert cosine(image_vector, clip.embed_images([photos / "d.png"])[0]) >= 0.9999
    assert cosine(text_vector, clip.embed_texts(["a photo of a dog"])[0]) >= 0.9999



def test_similar_ranks_first_the_image_a_related_query_shows(fresh, models, tmp_path):
    """The query is not a stored file: a stored picture cropped by a few pixels, brightened and
    saved as JPEG. `llm similar` ranks its source first (a lookup by file content, or an embedding
    of the wrong pixels, would not). Pictures with shapes, not noise: the tiny model is random."""
    from PIL import ImageDraw

    colours = [(220, 40, 40), (40, 180, 60), (40, 70, 220), (230, 210, 40), (150, 60, 200), (30, 30, 30)]
    stored = tmp_path / "stored"
    stored.mkdir()
    for k, colour in enumerate(colours):
        image = Image.new("RGB", (64, 48), (235, 235, 235))
        draw = ImageDraw.Draw(image)
        draw.rectangle((8 + 6 * k, 6, 30 + 6 * k, 40), fill=colour)
        draw.ellipse((40 - 4 * k, 4 + 3 * k, 58 - 4 * k, 22 + 3 * k), fill=colours[(k + 2) % 6])
        image.save(stored / f"s{k}.png")
    fresh("mlx-clip", "register", "base", models["base"][0])
    fresh("embed-multi", "shapes", "--files", stored, "*.png", "--binary", "-m", "mlx-clip/base")
    for k in (0, 2, 5):
        with Image.open(stored / f"s{k}.png") as image:
            related = np.asarray(image.crop((2, 1, 63, 46)), np.int16) + 6
        query = tmp_path / f"query{k}.jpg"
        Image.fromarray(np.clip(related, 0, 255).astype(np.uint8)).save(query, quality=80)
        lines = fresh("similar", "shapes", "-i", query, "--binary").stdout.splitlines()
        hits = [json.loads(line) for line in lines]
        assert len(hits) == 6 and hits[0]["id"] == f"s{k}.png", hits
        assert hits[0]["score"] < 0.9999  # really another image


def test_names_and_aliases_another_plugin_serves_are_refused(fresh, models):
    """An alias `fake-embed` (another plugin's model id) or `ada-002` (llm's own OpenAI model's alias)
    would take that model away from its users; llm's aliases.json counts too."""
    base = models["base"][0]
    line = error_line(fresh("mlx-clip", "register", "base", base, "-a", "fake-embed", "--lazy", ok=False))
    assert "'fake-embed'" in line and "another plugin" in line
    line = error_line(fresh("mlx-clip", "register", "base", base, "-a", "ada-002", "--lazy", ok=False))
    assert "'ada-002'" in line and "text-embedding-ada-002" in line
    fresh("aliases", "set", "fe", "fake-embed")
    line = error_line(fresh("mlx-clip", "register", "base", base, "-a", "fe", "--lazy", ok=False))
    assert "'fe'" in line
    assert not (fresh.user_dir / registry.REGISTRY_FILE).exists()
    fresh("mlx-clip", "register", "base", base, "-a", "mine", "--lazy")  # a free alias still works
    assert fresh("embed", "-m", "fake-embed", "-c", "aaa").returncode == 0


def test_the_registry_checks_names_without_llm(tmp_path, monkeypatch):
    """registry.py works where llm is not installed: nothing else serves any name then."""
    import builtins

    real_import = builtins.__import__

    def no_llm(name, *args, **kwargs):
        if name == "llm" or name.startswith("llm."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llm)
    assert registry.served_elsewhere() == {}
    registry.check_free("anything", ["ada-002"], directory=tmp_path)

"""The llm plugin, driven through the real `llm` CLI in subprocesses.

Each CLI call gets a temporary LLM_USER_PATH. The plugin is made discoverable without
`pip install -e .`: a throwaway `mlx_clip_finetune-*.dist-info` whose entry points are read
from pyproject.toml goes first on PYTHONPATH, followed by this checkout, and
LLM_LOAD_PLUGINS names it, so the tests always run this checkout's code (an editable
install may point at another worktree) and no other installed llm plugin gets loaded.
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
            LLM_LOAD_PLUGINS=DIST_NAME,
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
    assert "'broken.png'" in line and "not a readable image" in line and "mlx-clip/base" in line
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


def test_broken_registry_file_does_not_break_llm(fresh):
    fresh.user_dir.mkdir(parents=True, exist_ok=True)
    (fresh.user_dir / registry.REGISTRY_FILE).write_text("{not json")
    result = fresh("embed-models")
    assert registry.REGISTRY_FILE in result.stderr and "Traceback" not in result.stderr
    line = error_line(fresh("mlx-clip", "list", ok=False))
    assert registry.REGISTRY_FILE in line


# The registry and the embedding model in-process: what finetune.py --register calls.

def test_register_model_stores_absolute_paths_and_hub_ids(tmp_path, tiny_hf, monkeypatch):
    monkeypatch.chdir(tiny_hf.parent)
    entry = registry.register_model("base", tiny_hf.name, directory=tmp_path)
    assert entry.source == str(tiny_hf.resolve()) and entry.kind == "local" and entry.model_id == "mlx-clip/base"
    hub = registry.register_model("b32", "openai/clip-vit-base-patch32", directory=tmp_path)
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

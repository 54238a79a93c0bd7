import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlx_clip  # noqa: E402,F401  (first: puts OpenBLAS under MLX on Linux)
from clip_fixtures import make_hf_clip, write_openai_vocab  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def own_llm_settings(tmp_path_factory):
    """No test writes the user's own llm settings: index.py, --register and the plugin register
    models there (a test's own `LLM_USER_PATH` still wins inside it)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("LLM_USER_PATH", str(tmp_path_factory.mktemp("llm-user")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def openai_vocab(tmp_path_factory) -> Path:
    """A folder with OpenAI CLIP's real vocab.json and merges.txt."""
    return write_openai_vocab(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory, openai_vocab) -> Path:
    """A tiny random transformers CLIPModel folder (quick_gelu), with tokenizer and processor."""
    return make_hf_clip(tmp_path_factory.mktemp("tiny_hf"), vocab_folder=openai_vocab)


@pytest.fixture(scope="session")
def shapes_manifest(tmp_path_factory) -> Path:
    """192 coloured-shape images (32x32) captioned by colour and shape, as a fetch.py manifest."""
    from finetune_fixtures import write_shapes

    return write_shapes(tmp_path_factory.mktemp("shapes"), per_class=16)


@pytest.fixture(scope="module")
def fetch_server():
    """A FetchServer on 127.0.0.1 for one test module (tests/fetch_server.py), stopped after it."""
    from fetch_server import FetchServer

    server = FetchServer().start()
    yield server
    server.stop()

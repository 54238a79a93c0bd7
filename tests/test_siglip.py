"""SigLIP / SigLIP 2 in MLX equal transformers: embeddings and logits, token ids, pixels, and both
conversion directions (tiny random SiglipModels with locally trained tokenizers)."""

import json
import subprocess
import sys
from pathlib import Path

import matplotlib
import mlx.core as mx
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file

import mlx_clip
from mlx_clip.errors import InputError
from siglip_fixtures import BASE_TEXT, BASE_VISION, make_hf_siglip

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["a photo of a cat", "  Leading and trailing  spaces ", "", "!!!", "Hello, World! It's a café — déjà vu.",
         "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ！", "tabs\tand\nnewlines\u3000ideographic", "x " * 100,
         "ünïcödé ÀÉÎ 123 4.5", "emoji 🦀 and 中文", "under_score and ▁ bar", "Σίσυφος ΟΔΥΣΣΕΎΣ", "İstanbul",
         "An amphora from the Bronze Age, found at 51.5074, -0.1278", "a\u00a0non-breaking\u2009thin space"]


@pytest.fixture(scope="module")
def siglip_v1(tmp_path_factory) -> Path:
    """SigLIP v1's files: spiece.model only (SiglipTokenizer), bilinear resize."""
    return make_hf_siglip(tmp_path_factory.mktemp("siglip_v1"), tokenizer="spiece", resample=2)


@pytest.fixture(scope="module")
def siglip_v2(tmp_path_factory) -> Path:
    """SigLIP 2's files: a Gemma tokenizer.json (end-of-text in its template), right padding, and a
    tokenizer_config.json whose add_bos_token, which transformers 5 ignores beside a tokenizer.json."""
    return make_hf_siglip(tmp_path_factory.mktemp("siglip_v2"), tokenizer="gemma", resample=3, seed=1,
                          tokenizer_config=dict(padding_side="right", add_eos_token=True),
                          config_file_extra=dict(add_bos_token=True, add_eos_token=True))


def _parity(folder: Path, tol: float = 1e-4, batch: int = 3) -> None:
    from transformers import SiglipModel

    hf = SiglipModel.from_pretrained(folder).eval()
    model = mlx_clip.load(folder)
    assert type(model).__name__ == "SigLIP"
    size = model.config.vision.image_size
    torch.manual_seed(1)
    pixels = torch.randn(batch, 3, size, size)
    ids = model.tokenizer(TEXTS[:4])
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids, dtype=torch.long), pixel_values=pixels)
    ours = model(mx.array(ids), mx.array(pixels.permute(0, 2, 3, 1).numpy()))
    for name in ("image_embeds", "text_embeds", "logits_per_image", "logits_per_text"):
        diff = np.abs(np.array(getattr(ours, name)) - getattr(ref, name).numpy()).max()
        assert diff <= tol, f"{name}: max abs diff {diff}"


def test_tiny_siglip_parity(siglip_v1):
    _parity(siglip_v1)


def test_tiny_siglip2_parity(siglip_v2):
    _parity(siglip_v2)


def test_odd_config_fields_honoured(tmp_path):
    """Image size no patch divides (as so400m-patch14-384), eps, widths, heads and a text head
    projecting onto the vision width are all read."""
    vision = dict(hidden_size=48, intermediate_size=40, num_hidden_layers=3, num_attention_heads=3,
                  image_size=36, patch_size=8, layer_norm_eps=1e-3, hidden_act="gelu")
    text = dict(hidden_size=20, intermediate_size=56, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=12, projection_size=48, layer_norm_eps=1e-5)
    _parity(make_hf_siglip(tmp_path / "odd", vision=vision, text=text, seed=5))


def test_base_sized_parity(tmp_path):
    """google/siglip-base-patch16-224's widths (768, 12 heads, 196 patches of 16 px at 224, 64 text
    positions) with 2 of its 12 layers per tower: all 12 took 34 s here (mostly building and saving
    the random torch model), and the layers repeat the same block."""
    vision, text = dict(BASE_VISION, num_hidden_layers=2), dict(BASE_TEXT, num_hidden_layers=2)
    _parity(make_hf_siglip(tmp_path / "base", vision=vision, text=text), batch=2)


@pytest.mark.parametrize("fixture", ["siglip_v1", "siglip_v2"])
def test_token_ids_equal_transformers(fixture, request):
    from transformers import AutoTokenizer

    folder = request.getfixturevalue(fixture)
    reference = AutoTokenizer.from_pretrained(folder)
    ours = mlx_clip.load(folder).tokenizer
    length = ours.context_length
    expected = reference(TEXTS, padding="max_length", max_length=length, truncation=True)["input_ids"]
    got = ours(TEXTS)
    for text, want, have in zip(TEXTS, expected, got):
        assert list(have) == list(want), repr(text)
    if fixture == "siglip_v2":  # as transformers: tokenizer.json's template, not the config's add_bos_token
        assert got[0][0] != reference.bos_token_id and reference.eos_token_id in got[0]
    assert ours.count_tokens(["x " * 100])[0] > length  # counted before truncation


def test_spiece_without_sentencepiece_is_one_line(siglip_v1, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    with pytest.raises(InputError) as err:
        mlx_clip.load(siglip_v1)
    message = str(err.value)
    assert "\n" not in message and "spiece.model" in message and "pip install sentencepiece protobuf" in message


def test_preprocessing_equals_siglip_image_processor(siglip_v1, siglip_v2, tmp_path):
    """Exact resize to size x size (bilinear for v1's file, bicubic for v2's), no crop, mean/std 0.5."""
    from transformers import SiglipImageProcessorPil

    photo = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")
    paths = []
    for w, h in [(640, 480), (300, 900), (33, 31), (1000, 131)]:
        for mode in ("RGB", "RGBA", "L"):
            path = tmp_path / f"p{w}x{h}{mode}.png"
            photo.resize((w, h)).convert(mode).save(path)
            paths.append(path)
    for folder in (siglip_v1, siglip_v2):
        reference = SiglipImageProcessorPil.from_pretrained(folder)
        ours = mlx_clip.load(folder).image_processor
        assert ours.resize_to == (32, 32) and not ours.do_center_crop
        for path in paths:
            with Image.open(path) as image:
                expected = reference(images=image.convert("RGB"), return_tensors="np")["pixel_values"][0]
            got = ours([path])[0]
            assert got.shape == (32, 32, 3), path.name
            assert np.abs(got - expected.transpose(1, 2, 0)).max() <= 1e-6, path.name


def run_convert(*args):
    return subprocess.run([sys.executable, str(ROOT / "convert.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("fixture", ["siglip_v1", "siglip_v2"])
def test_convert_round_trip_and_export(fixture, request, tmp_path):
    """HF -> MLX -> HF is bit-identical; the export loads in transformers (same family) and
    sentence-transformers, and both embed like MLX; the MLX folder needs no sentencepiece."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    source = request.getfixturevalue(fixture)
    mlx_dir, hf_dir = tmp_path / "mlx", tmp_path / "hf"
    done = run_convert("--hf-path", source, "--mlx-path", mlx_dir)
    assert done.returncode == 0, done.stderr
    assert (mlx_dir / "tokenizer.json").is_file()
    done = run_convert("--to-hf", "--mlx-path", mlx_dir, "--hf-path", hf_dir)
    assert done.returncode == 0, done.stderr
    original, back = load_file(source / "model.safetensors"), load_file(hf_dir / "model.safetensors")
    assert set(original) == set(back)
    for name, tensor in original.items():
        assert back[name].dtype == tensor.dtype and back[name].tobytes() == tensor.tobytes(), name
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["model_type"] == "siglip" and config["architectures"] == ["SiglipModel"]
    assert type(AutoModel.from_pretrained(hf_dir)).__name__ == "SiglipModel"

    model = mlx_clip.load(mlx_dir)
    st = SentenceTransformer(str(hf_dir), device="cpu")
    texts = ["a red amphora", "a bronze coin from the Roman period found at the site", "word " * 80]
    images = [Image.new("RGB", (40 + 7 * i, 33), (40 * i, 200 - 30 * i, 90)) for i in range(3)]
    for theirs, ours in [(st.encode(texts), model.embed_texts(texts)), (st.encode(images), model.embed_images(images))]:
        theirs = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
        cosine = (theirs * ours).sum(axis=1)
        assert cosine.min() >= 0.9999, cosine


def test_saving_over_an_old_model_folder_writes_the_converted_tokenizer(siglip_v1, tmp_path):
    target = tmp_path / "old"
    target.mkdir()
    (target / "tokenizer.json").write_text("{}")  # what an earlier save of something else left
    model = mlx_clip.load(siglip_v1)
    model.save(target)
    assert (mlx_clip.load(target).tokenizer(TEXTS) == model.tokenizer(TEXTS)).all()


def test_naflex_siglip2_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "naflex"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "siglip2", "architectures": ["Siglip2Model"]}))
    with pytest.raises(InputError) as err:
        mlx_clip.load(folder)
    assert "\n" not in str(err.value) and "NaFlex" in str(err.value) and "siglip2-base-patch16-224" in str(err.value)

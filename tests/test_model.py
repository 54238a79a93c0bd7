"""MLX CLIP equals transformers' CLIPModel (fp32, random weights) on embeddings and logits."""

import mlx.core as mx
import numpy as np
import pytest
import torch
from transformers import CLIPModel

import mlx_clip
from clip_fixtures import B32_TEXT, B32_VISION, make_hf_clip

TEXTS = ["a photo of a cat", "an amphora from the Bronze Age, found at 51.5074, -0.1278", "", "x " * 100]


def _forward_both(folder, batch=2):
    hf = CLIPModel.from_pretrained(folder).eval()
    model = mlx_clip.load(folder)
    size = model.config.vision.image_size
    torch.manual_seed(1)
    pixels = torch.randn(batch, 3, size, size)
    ids = model.tokenizer(TEXTS)
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids, dtype=torch.long), pixel_values=pixels)
    ours = model(mx.array(ids), mx.array(pixels.permute(0, 2, 3, 1).numpy()))
    return ref, {name: np.array(value) for name, value in vars(ours).items()}


def _assert_parity(ref, ours, tol=1e-4):
    pairs = {
        "image_embeds": (ours["image_embeds"], ref.image_embeds),
        "text_embeds": (ours["text_embeds"], ref.text_embeds),
        "logits_per_image": (ours["logits_per_image"], ref.logits_per_image),
        "logits_per_text": (ours["logits_per_text"], ref.logits_per_text),
    }
    for name, (mine, theirs) in pairs.items():
        diff = np.abs(mine - theirs.numpy()).max()
        assert diff <= tol, f"{name}: max abs diff {diff}"


def test_tiny_parity(tiny_hf):
    _assert_parity(*_forward_both(tiny_hf))


def test_gelu_parity(tmp_path, openai_vocab):
    folder = make_hf_clip(tmp_path / "gelu", hidden_act="gelu", vocab_folder=openai_vocab, seed=3)
    assert mlx_clip.load(folder).config.vision.hidden_act == "gelu"
    _assert_parity(*_forward_both(folder))


def test_odd_config_fields_honoured(tmp_path, openai_vocab):
    """Non-default eps, projection size, patch/image size and layer counts are all read."""
    vision = dict(hidden_size=48, intermediate_size=40, num_hidden_layers=3, num_attention_heads=3,
                  image_size=48, patch_size=16, layer_norm_eps=1e-3)
    text = dict(hidden_size=24, intermediate_size=56, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=77, layer_norm_eps=1e-6)
    folder = make_hf_clip(tmp_path / "odd", vision=vision, text=text, projection_dim=20,
                          hidden_act="gelu_new", vocab_folder=openai_vocab, seed=5)
    _assert_parity(*_forward_both(folder))


@pytest.fixture(scope="module")
def b32_hf(tmp_path_factory, openai_vocab):
    return make_hf_clip(tmp_path_factory.mktemp("b32"), vision=B32_VISION, text=B32_TEXT,
                        projection_dim=512, vocab_folder=openai_vocab)


def test_b32_dimensions_parity(b32_hf):
    ref, ours = _forward_both(b32_hf)
    assert ours["image_embeds"].shape == (2, 512)
    _assert_parity(ref, ours)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_keeps_embeddings(tiny_hf, dtype, tmp_path):
    full = mlx_clip.load(tiny_hf)
    half_folder = mlx_clip.load(tiny_hf, dtype=dtype).save(tmp_path / dtype)
    half = mlx_clip.load(half_folder)  # stored dtype is kept
    assert half.dtype == getattr(mx, dtype)
    rng = np.random.default_rng(0)
    pixels = rng.normal(size=(4, 32, 32, 3)).astype(np.float32)
    ids = full.tokenizer(TEXTS)
    for a, b in [(full.embed_pixels(pixels), half.embed_pixels(pixels)),
                 (full.embed_tokens(ids), half.embed_tokens(ids))]:
        cos = (np.array(a) * np.array(b.astype(mx.float32))).sum(-1)
        assert cos.min() >= 0.99, cos


def test_embeddings_are_unit_and_batched(tiny_hf, tmp_path):
    from PIL import Image

    model = mlx_clip.load(tiny_hf)
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (40 + i, 30), (50 * i, 20, 200 - 30 * i)).save(path)
        paths.append(path)
    together = model.embed_images(paths, batch_size=2)
    alone = np.stack([model.embed_images(p)[0] for p in paths])
    assert together.shape == (5, 16)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    texts = model.embed_texts(["a", "b", "c"], batch_size=2)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)


def test_weights_update_reaches_compiled_embedding(tiny_hf):
    """embed_* are compiled; changed weights must be used, not a stale copy."""
    model = mlx_clip.load(tiny_hf)
    ids = model.tokenizer(["a red circle"])
    before = np.array(model.embed_tokens(ids))
    model.text_projection.weight = model.text_projection.weight * -1
    after = np.array(model.embed_tokens(ids))
    np.testing.assert_allclose(after, -before, atol=1e-6)


def test_quick_gelu_matches_exact_sigmoid_and_its_gradient():
    """The libm-free quick_gelu equals x * sigmoid(1.702 x) (value and gradient) to float32 rounding."""
    from mlx_clip.models.model import ACTIVATIONS

    fast = ACTIVATIONS["quick_gelu"]
    x = mx.concatenate([mx.linspace(-120, 120, 200_001), mx.random.normal((100_000,)) * 4])

    def exact(v):
        return v * mx.sigmoid(1.702 * v)

    assert mx.abs(fast(x) - exact(x)).max().item() <= 2e-6
    grad_fast = mx.grad(lambda v: fast(v).sum())(x)
    grad_exact = mx.grad(lambda v: exact(v).sum())(x)
    assert mx.abs(grad_fast - grad_exact).max().item() <= 2e-6
    for dtype in (mx.bfloat16, mx.float16):
        half = x[:1000].astype(dtype)
        assert fast(half).dtype == dtype
        assert mx.abs(fast(half).astype(mx.float32) - exact(half).astype(mx.float32)).max().item() <= 0.25


@pytest.mark.parametrize("mask", [None, "causal"])
def test_cpu_attention_matches_mlx_fused_attention_and_its_gradient(mask):
    """fast_ops.attention (libm-free softmax on the CPU) equals mx.fast.scaled_dot_product_attention
    in value and gradient to float32 rounding; a causal mask gives exactly zero weight to later keys."""
    from mlx_clip.models.fast_ops import attention

    q, k, v = (mx.random.normal((3, 4, 23, 16), key=mx.random.key(seed)) * 3 for seed in range(3))

    def fused(q, k, v):
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=mask)

    def ours(q, k, v):
        return attention(q, k, v, 0.25, mask)

    assert mx.abs(ours(q, k, v) - fused(q, k, v)).max().item() <= 2e-5
    cotangent = mx.random.normal((3, 4, 23, 16), key=mx.random.key(9))
    grads = [mx.grad(lambda *a, f=f: (f(*a) * cotangent).sum(), argnums=(0, 1, 2))(q, k, v) for f in (ours, fused)]
    for mine, theirs in zip(*grads):
        assert mx.abs(mine - theirs).max().item() <= 1e-4 * max(1.0, mx.abs(theirs).max().item())
    if mask == "causal":  # the first query sees only the first key: its output is that key's value
        np.testing.assert_allclose(np.array(ours(q, k, v)[:, :, 0]), np.array(v[:, :, 0]), rtol=0, atol=1e-6)


def test_cpu_streams_embed_like_one_pass(tiny_hf):
    """The multi-stream CPU path gives the single forward pass's embeddings and restores BLAS threads."""
    import ctypes

    from mlx_clip import _blas
    from mlx_clip.models.model import normalize

    model = mlx_clip.load(tiny_hf)
    pixels = np.random.default_rng(3).standard_normal((9, 32, 32, 3)).astype(np.float32)
    if _blas.loaded_blas:
        threads = ctypes.CDLL(_blas.loaded_blas).openblas_get_num_threads()
    split = np.array(model.embed_pixels(pixels))
    whole = np.array(normalize(model.encode_image(mx.array(pixels))))
    np.testing.assert_allclose(split, whole, atol=1e-6)
    if _blas.loaded_blas:
        assert ctypes.CDLL(_blas.loaded_blas).openblas_get_num_threads() == threads


def test_cpu_streams_embed_from_any_thread(tiny_hf):
    """An MLX stream exists only in the thread that made it: embedding in a worker thread (a search
    server's request, a caller's pool) and then in this one both work, with the same vectors."""
    import threading

    model = mlx_clip.load(tiny_hf)
    pixels = np.random.default_rng(4).standard_normal((16, 32, 32, 3)).astype(np.float32)
    found = {}

    def embed(name):
        try:
            found[name] = np.array(model.embed_pixels(pixels))
        except Exception as err:  # noqa: BLE001  (the assertion below says what was raised)
            found[name] = err

    for name in ("worker", "another worker"):
        worker = threading.Thread(target=embed, args=(name,))
        worker.start()
        worker.join(60)
    embed("main")
    assert all(isinstance(v, np.ndarray) for v in found.values()), found
    np.testing.assert_allclose(found["worker"], found["main"], atol=1e-6)
    np.testing.assert_allclose(found["another worker"], found["main"], atol=1e-6)


def test_mlx_folder_keeps_hf_names_and_the_mlx_patch_layout(tiny_hf, tmp_path):
    """The MLX folder's tensors are HF's, the patch kernel stored (out, kh, kw, in) as MLX folders
    always were, and both folders load to bit-identical weights (PatchEmbedding is a module)."""
    from mlx.utils import tree_flatten
    from safetensors.numpy import load_file

    from mlx_clip.models.model import PatchEmbedding

    hf = load_file(tiny_hf / "model.safetensors")
    model = mlx_clip.load(tiny_hf)
    assert isinstance(model.vision_model.embeddings.patch_embedding, PatchEmbedding)
    saved = load_file(model.save(tmp_path / "mlx") / "mlx_model.safetensors")
    key = "vision_model.embeddings.patch_embedding.weight"
    assert saved[key].tobytes() == np.ascontiguousarray(hf[key].transpose(0, 2, 3, 1)).tobytes()
    assert set(saved) == {k for k in hf if not k.endswith("position_ids")}
    again = mlx_clip.load(tmp_path / "mlx")
    for name, value in tree_flatten(again.parameters()):
        assert np.array(value).tobytes() == saved[name].tobytes(), name
    for name, value in tree_flatten(model.parameters()):
        assert np.array(value).tobytes() == saved[name].tobytes(), name


def test_text_embeddings_run_only_up_to_end_of_text_and_match_transformers(tiny_hf):
    """embed_texts trims padding after the batch's last end-of-text token (text_length.py): the
    compiled text tower sees fewer than 77 positions, and the vectors still equal transformers'
    on the fully padded ids."""
    model = mlx_clip.load(tiny_hf)
    hf = CLIPModel.from_pretrained(tiny_hf).eval()
    texts = ["a cat", "an amphora from the Bronze Age, found at 51.5074, -0.1278"]
    shapes = []
    compiled = model._embed_text_fn
    model._embed_text_fn = lambda ids: (shapes.append(tuple(ids.shape)), compiled(ids))[1]
    ours = model.embed_texts(texts)
    ids = np.asarray(model.tokenizer(texts))
    needed = int((ids == model.tokenizer.eos_token_id).argmax(axis=1).max()) + 1
    assert shapes == [(2, -(-needed // 8) * 8)] and shapes[0][1] < ids.shape[1]
    with torch.no_grad():
        features = hf.get_text_features(input_ids=torch.tensor(ids, dtype=torch.long))
    features = features.pooler_output if hasattr(features, "pooler_output") else features
    reference = torch.nn.functional.normalize(features, dim=-1).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_many_texts_are_batched_shortest_first_and_returned_in_order(tiny_hf):
    """With more texts than one batch, each batch runs only its own longest text's positions, and
    every vector lands at its text's place (equal to embedding that text alone)."""
    model = mlx_clip.load(tiny_hf)
    texts = ["an amphora from the Bronze Age, found at 51.5074, -0.1278, now in the museum's store",
             "a cat", "x " * 100, "a bronze coin of the Roman period", "dog", "a red circle on a blue ground"]
    shapes = []
    compiled = model._embed_text_fn
    model._embed_text_fn = lambda ids: (shapes.append(tuple(ids.shape)), compiled(ids))[1]
    together = model.embed_texts(texts, batch_size=2)
    assert [rows for rows, _ in shapes] == [2, 2, 2]
    lengths = [length for _, length in shapes]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
    alone = np.concatenate([model.embed_texts([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)

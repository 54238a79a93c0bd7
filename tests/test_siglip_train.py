"""Fine-tuning SigLIP: the sigmoid loss with image groups, one step equal to PyTorch, no padding
trimmed, and a tiny SigLIP trained end to end through finetune.py, then used by llm and compare."""

import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import torch
from mlx.utils import tree_flatten, tree_unflatten

import mlx_clip
from mlx_clip import compare, finetune
from mlx_clip.models import weights as W
from mlx_clip.models.lora import LoraConfig
from mlx_clip.train.loss import chance_loss, sigmoid_loss
from mlx_clip.train.optim import OptimConfig, make_optimizer, no_weight_decay
from mlx_clip.models.trainable import LockConfig, apply_locks
from mlx_clip.train.step import Trainer, clip_loss
from siglip_fixtures import TINY_TEXT, make_hf_siglip
from test_llm_plugin import LLM, cosine, plugin_site  # noqa: F401  (plugin_site: the fixture)

CAPTIONS = ["a red circle", "a blue square", "a red circle", "a green triangle", "a yellow star"]
GROUPS = [0, 1, 0, 3, 4]  # records 0 and 2 show the same image: positives for each other
LR, WD, BETAS, EPS = 1e-4, 2.0, (0.9, 0.98), 1e-6


@pytest.fixture(scope="module")
def siglip_hf(tmp_path_factory):
    return make_hf_siglip(tmp_path_factory.mktemp("siglip"), tokenizer="gemma", seed=2,
                          tokenizer_config=dict(padding_side="right", add_eos_token=True))


def torch_sigmoid_loss(logits_per_text, groups):
    """Written independently: +1 for pairs of one image group, -1 otherwise; -sum log sigmoid / rows."""
    groups = torch.tensor(groups)
    signs = 2 * (groups[:, None] == groups[None, :]).float() - 1
    return -torch.nn.functional.logsigmoid(signs * logits_per_text).sum() / len(groups)


def test_sigmoid_loss_counts_same_image_pairs_as_positives():
    logits = np.random.default_rng(0).standard_normal((5, 5)).astype(np.float32) * 4
    value, grad = mx.value_and_grad(lambda x: sigmoid_loss(x, mx.array(GROUPS)))(mx.array(logits))
    x = torch.tensor(logits.astype(np.float64), requires_grad=True)
    expected = torch_sigmoid_loss(x, GROUPS)
    expected.backward()
    np.testing.assert_allclose(float(value), expected.item(), rtol=1e-6)
    np.testing.assert_allclose(np.array(grad), x.grad.numpy(), atol=1e-6)
    # without groups it is transformers' SiglipModel loss (its return_loss formula, on the diagonal)
    eye = torch.eye(5, dtype=torch.float64)
    hf = -torch.nn.functional.logsigmoid((2 * eye - 1) * torch.tensor(logits, dtype=torch.float64)).sum(-1).mean()
    np.testing.assert_allclose(float(sigmoid_loss(mx.array(logits))), hf.item(), rtol=1e-6)
    plain_grad = np.array(mx.grad(lambda x: sigmoid_loss(x))(mx.array(logits)))
    # the groups rule matters: the pair (0, 2) is pulled up with it, pushed down without
    assert np.array(grad)[0, 2] < 0 < plain_grad[0, 2] and np.array(grad)[2, 0] < 0 < plain_grad[2, 0]
    # a padded row and column count for nothing
    padded = np.pad(logits, ((0, 1), (0, 1)), constant_values=7.0)
    valid = mx.array([True] * 5 + [False])
    masked = sigmoid_loss(mx.array(padded), mx.array(GROUPS + [9]), valid)
    np.testing.assert_allclose(float(masked), float(value), rtol=1e-6)


def test_chance_level_is_the_best_constant_logit():
    batch = 32
    constant = np.linspace(-10, 5, 20001)
    per_row = -(np.log(1 / (1 + np.exp(-constant))) + (batch - 1) * np.log(1 / (1 + np.exp(constant))))
    assert abs(per_row.min() - chance_loss("sigmoid", batch)) < 1e-6
    assert chance_loss("softmax", batch) == pytest.approx(np.log(batch))


def assert_same_update(name: str, mine: np.ndarray, theirs: np.ndarray, start: np.ndarray, lr: float) -> None:
    """Two steps' weights equal to 2e-5 (2 % of one step at lr 1e-3: on an AVX-512 Xeon one weight
    in a thousand lands 1.1e-5 from PyTorch's, float32 rounding of a sum in another order), but for attention key biases: a key bias adds one constant to
    all of a query's scores, which softmax ignores, so its true gradient is 0 and Adam scales float
    noise there up to ~lr per step (differently on each side); there both moved at most 2.5 lr."""
    noise = np.zeros(mine.shape, bool)
    if name.endswith("k_proj.bias"):
        noise[:] = True
    elif name.endswith("in_proj_bias"):  # q, k, v stacked
        noise[len(mine) // 3: 2 * len(mine) // 3] = True
    for side in (mine, theirs):
        assert np.abs(side - start)[noise].max(initial=0) <= 2.5 * lr, name
    np.testing.assert_allclose(mine[~noise], theirs[~noise], atol=2e-5, rtol=0, err_msg=name)


def test_one_step_matches_pytorch(siglip_hf):
    from transformers import SiglipModel

    model = mlx_clip.load(siglip_hf)
    ids = model.tokenizer(CAPTIONS)
    pixels = np.random.default_rng(0).standard_normal((len(CAPTIONS), 32, 32, 3)).astype(np.float32)

    torch.manual_seed(0)
    hf = SiglipModel.from_pretrained(siglip_hf).float().train()
    decay, no_decay = [], []
    for name, param in hf.named_parameters():
        (no_decay if no_weight_decay(name) else decay).append(param)
    names = {name for name, _ in hf.named_parameters() if no_weight_decay(name)}
    assert {"logit_bias", "logit_scale", "vision_model.head.probe", "vision_model.head.attention.in_proj_bias",
            "vision_model.embeddings.patch_embedding.bias"} <= names
    assert "vision_model.head.attention.in_proj_weight" not in names
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=EPS)
    ref_losses = []
    for step in range(2):
        batch = pixels[::-1].copy() if step else pixels
        out = hf(input_ids=torch.tensor(ids, dtype=torch.long), pixel_values=torch.tensor(batch).permute(0, 3, 1, 2))
        loss = torch_sigmoid_loss(out.logits_per_text, GROUPS)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ref_losses.append(loss.item())

    trainer = Trainer(model, make_optimizer(OptimConfig(lr=LR, weight_decay=WD, warmup=0, betas=BETAS, eps=EPS),
                                            total_steps=100), eos_token_id=model.tokenizer.eos_token_id)
    for step in range(2):
        loss = float(trainer.step(ids, pixels[::-1].copy() if step else pixels, groups=GROUPS))
        # float32 agreement relative to a loss near 20 (1.1e-5 apart on an AVX-512 Xeon)
        assert loss == pytest.approx(ref_losses[step], rel=2e-6), (step, loss, ref_losses[step])
    ours = W.mlx_to_hf(dict(tree_flatten(model.parameters())))
    initial = SiglipModel.from_pretrained(siglip_hf).state_dict()
    moved = 0
    for name, param in hf.named_parameters():
        mine, theirs, start = np.array(ours[name]), param.detach().numpy(), initial[name].numpy()
        assert_same_update(name, mine, theirs, start, LR)
        moved += not np.allclose(theirs, start)
    assert moved > len(ours) // 2
    assert float(model.logit_scale[0]) > np.log(100)  # no CLIP clamp: the pretrained-like 4.7 stays


def test_text_padding_is_kept(siglip_hf):
    """SigLIP reads every position (no causal mask, pooled last): trimming padding would change it."""
    model = mlx_clip.load(siglip_hf)
    trainer = Trainer(model, make_optimizer(OptimConfig(), 10), eos_token_id=model.tokenizer.eos_token_id)
    ids = model.tokenizer(["a red circle"])
    assert trainer.eos_token_id is None
    assert trainer.step_inputs(ids, np.zeros((1, 32, 32, 3), np.float32))[0].shape == ids.shape == (1, 16)


def test_bfloat16_keeps_temperature_and_bias_float32(siglip_hf):
    model = mlx_clip.load(siglip_hf)
    trainer = Trainer(model, make_optimizer(OptimConfig(lr=1e-3), 10), precision="bfloat16")
    ids = model.tokenizer(CAPTIONS)
    pixels = np.random.default_rng(0).standard_normal((len(CAPTIONS), 32, 32, 3)).astype(np.float32)
    assert np.isfinite(float(trainer.step(ids, pixels, groups=GROUPS)))
    assert model.logit_scale.dtype == model.logit_bias.dtype == mx.float32
    assert model.text_model.head.weight.dtype == mx.bfloat16
    assert trainer.fp32_parameters()["logit_bias"].dtype == mx.float32


@pytest.mark.parametrize("locks", [LockConfig(), LockConfig(lock_image=True, lock_text=True, unlock_last=1)])
def test_lora_trains_the_bias_as_it_trains_the_temperature(siglip_hf, locks):
    """With --lora (and whatever the locks) the sigmoid loss's two scalars both train, in AdamW's
    group without weight decay. Written out, with z = t cos + b and p = 1 for same-image pairs:
    dL/db = sum (sigmoid(z) - p) / B and dL/dt = sum (sigmoid(z) - p)(z - b) / B, and Adam's
    first step moves each by lr g / (|g| + eps)."""
    model = mlx_clip.load(siglip_hf)
    apply_locks(model, locks, LoraConfig(rank=2))
    trainable = {k for k, _ in tree_flatten(model.trainable_parameters())}
    assert {"logit_scale", "logit_bias"} <= trainable
    assert all(".lora_" in k for k in trainable - {"logit_scale", "logit_bias"}), trainable
    ids = model.tokenizer(CAPTIONS)
    pixels = np.random.default_rng(0).standard_normal((len(CAPTIONS), 32, 32, 3)).astype(np.float32)
    scale, bias = float(model.logit_scale[0]), float(model.logit_bias[0])
    z = np.array(model(mx.array(ids), mx.array(pixels)).logits_per_image, np.float64)  # B = 0: the base model
    positive = np.equal.outer(GROUPS, GROUPS)
    residual = (1 / (1 + np.exp(-z)) - positive) / len(GROUPS)
    expected = {"logit_bias": residual.sum(), "logit_scale": (residual * (z - bias)).sum()}
    _, grads = nn.value_and_grad(model, clip_loss)(model, mx.array(ids), mx.array(pixels), mx.array(GROUPS))
    grads = dict(tree_flatten(grads))
    lr = 1e-2  # weight decay 0.5 would move b = -3 by a further 0.015: the bias has none, as the temperature
    trainer = Trainer(model, make_optimizer(OptimConfig(lr=lr, weight_decay=0.5, warmup=0, eps=EPS), 10))
    trainer.step(ids, pixels, groups=GROUPS)
    for name, start in (("logit_bias", bias), ("logit_scale", scale)):
        g = expected[name]
        assert abs(g) > 1e-3, name  # a real gradient
        np.testing.assert_allclose(float(grads[name][0]), g, rtol=1e-4, err_msg=name)
        np.testing.assert_allclose(float(getattr(model, name)[0]), start - lr * g / (abs(g) + EPS), rtol=0,
                                   atol=2e-6, err_msg=name)


def test_a_lora_checkpoint_without_moments_for_the_bias_resumes(siglip_hf):
    """A SigLIP LoRA checkpoint saved before the bias trained holds no AdamW moments for it: resumed,
    the bias trains from fresh moments and the adapters go on from their saved ones."""
    ids = mlx_clip.load(siglip_hf).tokenizer(CAPTIONS)
    pixels = np.random.default_rng(0).standard_normal((len(CAPTIONS), 32, 32, 3)).astype(np.float32)
    trainers = []
    for _ in range(2):
        model = mlx_clip.load(siglip_hf)
        apply_locks(model, LockConfig(), LoraConfig(rank=2))
        trainers.append(Trainer(model, make_optimizer(OptimConfig(lr=1e-2, warmup=0), 10)))
    old, new = trainers
    old.step(ids, pixels, groups=GROUPS)
    saved = [(k, v) for k, v in tree_flatten(old.optimizer.state) if ".logit_bias." not in k]
    assert len(saved) < len(tree_flatten(old.optimizer.state))
    new.load_fp32_parameters(old.fp32_parameters())
    new.load_optimizer_state(tree_unflatten(saved))
    bias = float(new.model.logit_bias[0])
    new.step(ids, pixels, groups=GROUPS)
    assert abs(float(new.model.logit_bias[0]) - bias) > 1e-3
    state = dict(tree_flatten(new.optimizer.state))
    assert int(state["states.0.step"]) == 2 and "states.0.logit_bias.m" in state  # the saved state went on


@pytest.fixture(scope="module")
def runs(shapes_manifest, tmp_path_factory):
    """base: a random SigLIP at SigLIP's training init (scale ln 10, bias -10), not trained;
    trained: 8 epochs of it on coloured shapes.

    6 text positions: texts are padded to max_length and pooled at the last position, so in a
    RANDOM tower a pad's own state dominates it (at 16 positions every caption embedded to
    cosine >= 0.95 and 20 epochs did not leave chance level; at 6 they start apart)."""
    folder = tmp_path_factory.mktemp("siglip_runs")
    start = make_hf_siglip(folder / "start", tokenizer="spiece", seed=3, logit_scale=np.log(10), logit_bias=-10,
                           text=dict(TINY_TEXT, max_position_embeddings=6))
    for name, epochs in (("base", "0"), ("trained", "8")):
        code = finetune.main([
            "--model", str(start), "--manifest", str(shapes_manifest), "--runs-dir", str(folder),
            "--name", name, "--caption", "a {colour} {shape}", "--label-field", "label", "--label-prompt", "a {label}",
            "--val-fraction", "0.15", "--test-fraction", "0.3", "--batch-size", "32", "--lr", "2e-3",
            "--warmup", "0.05", "--weight-decay", "0", "--crop-min-area", "0.8", "--no-progress", "--epochs", epochs])
        assert code == 0
    return folder


def test_tiny_siglip_learns_through_finetune(runs):
    metrics = json.loads((runs / "trained" / "metrics.json").read_text())
    before, history = metrics["history"][0], metrics["history"][1:]
    assert max(h["zero_shot_acc"] for h in history) >= 4 / 12, history  # 12 labels: 4x chance
    assert max(h["mean_R@1"] for h in history) > before["mean_R@1"] + 0.2
    assert history[-1]["train_loss"] < 0.9 * chance_loss("sigmoid", 32)
    assert not [w for w in metrics["warnings"] if "epoch 8" in w]  # early epochs sit at chance, the last not
    model = mlx_clip.load(runs / "trained" / "model")
    assert type(model).__name__ == "SigLIP"
    config = json.loads((runs / "trained" / "model" / "config.json").read_text())
    assert config["model_type"] == "siglip"
    card = (runs / "trained" / "model" / "README.md").read_text()
    assert "SigLIP" in card and "SiglipModel" in card and "CLIPModel" not in card


def test_compare_sees_the_trained_siglip_better(runs, capsys):
    assert compare.main([str(runs / "base"), str(runs / "trained"), "--out", str(runs / "cmp")]) == 0
    result = json.loads((runs / "cmp" / "compare.json").read_text())
    low, high = result["runs"][1]["metrics"]["mean_R@1"]["diff_ci95"]
    assert 0 < low <= high, result["runs"][1]["metrics"]["mean_R@1"]


def test_llm_embeds_with_the_fine_tuned_siglip(runs, tmp_path, plugin_site, shapes_manifest):  # noqa: F811
    llm = LLM(tmp_path / "llm_user", plugin_site)
    llm("mlx-clip", "register", "shapes", runs / "trained" / "model")
    model = mlx_clip.load(runs / "trained" / "model")
    text = "a red circle"
    assert cosine(llm.vector("embed", "-m", "mlx-clip/shapes", "-c", text), model.embed_texts([text])[0]) >= 0.9999
    image = shapes_manifest.parent / "images" / "s0001.png"
    vector = llm.vector("embed", "-m", "mlx-clip/shapes", "--binary", "-i", image)
    assert cosine(vector, model.embed_images([image])[0]) >= 0.9999


def test_two_ranks_step_equals_one_process(tmp_path):
    """Data-parallel SigLIP: logits with the bias from all-gathered features, the sigmoid loss over the
    global batch (a positive pair split across ranks, a padded short shard), summed gradients (the
    temperature's and the bias's divided by the ranks) equal one process with the global batch;
    the weights as in test_one_step_matches_pytorch (attention key biases bounded, not compared)."""
    import dist_helper
    from test_distributed import two_ranks_step_like_one_process

    def same_weights(name, got, want, start):
        assert_same_update(name, got, want, start, dist_helper.OPTIM.lr)

    siglip_hf = make_hf_siglip(tmp_path / "model", tokenizer="gemma", seed=4, logit_scale=np.log(10), logit_bias=-10)
    two_ranks_step_like_one_process(siglip_hf, tmp_path, same_weights=same_weights)

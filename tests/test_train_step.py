"""One MLX training step equals the same step in PyTorch (transformers CLIPModel + torch AdamW)."""

import mlx.core as mx
import numpy as np
import pytest
import torch
from mlx.utils import tree_flatten
from transformers import CLIPModel

import mlx_clip
from mlx_clip.models import weights as W
from mlx_clip.train.loss import contrastive_loss
from mlx_clip.train.optim import OptimConfig, make_optimizer, no_weight_decay
from mlx_clip.train.step import Trainer

CAPTIONS = ["a red circle", "a blue square", "a red circle", "a green triangle", "a yellow star"]
# lr * wd = 2e-4: decaying a LayerNorm weight (1.0) by mistake moves it 20x the tolerance.
# (A larger lr makes Adam's first step amplify float noise in near-zero gradients past 1e-5.)
LR, WD, BETAS, EPS = 1e-4, 2.0, (0.9, 0.98), 1e-6
STEPS = 2

# Records 0 and 2 show the same image (equal sha256) under different augmentations: positives.
GROUPS = [0, 1, 0, 3, 4]


def torch_loss(logits_per_image, groups):
    """The positives rule written independently: entries of one image group share the target mass."""
    groups = torch.tensor(groups)
    same = (groups[:, None] == groups[None, :]).float()
    targets = same / same.sum(1, keepdim=True)
    i2t = -(targets * torch.log_softmax(logits_per_image, 1)).sum(1).mean()
    t2i = -(targets.T * torch.log_softmax(logits_per_image.T, 1)).sum(1).mean()
    return (i2t + t2i) / 2


def numpy_loss_and_grad(logits, groups):
    """Loss and d loss / d logits, by hand: each row's target is 1/k on the k entries of its group."""
    n = len(groups)
    targets = np.array([[float(groups[i] == groups[j]) for j in range(n)] for i in range(n)])
    targets /= targets.sum(1, keepdims=True)
    loss, grad = 0.0, np.zeros_like(logits)
    for x, transpose in ((logits, False), (logits.T, True)):
        p = np.exp(x - x.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        loss += -(targets * np.log(p)).sum() / n / 2
        g = (p - targets) / n / 2  # softmax cross-entropy: d/dx = p - target
        grad += g.T if transpose else g
    return loss, grad


def test_entries_showing_the_same_image_are_positives():
    """Columns 0 and 2 (one image group) differ: the soft targets change loss and gradient."""
    logits = np.random.default_rng(0).standard_normal((5, 5)).astype(np.float32) * 4
    groups = np.array([0, 1, 0, 3, 4])
    assert np.abs(logits[:, 0] - logits[:, 2]).min() > 0.1 and np.abs(logits[0] - logits[2]).min() > 0.1
    value, grad = mx.value_and_grad(lambda x: contrastive_loss(x, mx.array(groups)))(mx.array(logits))
    expected, expected_grad = numpy_loss_and_grad(logits.astype(np.float64), groups)
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)
    np.testing.assert_allclose(np.array(grad), expected_grad, atol=1e-6)
    plain, plain_grad = numpy_loss_and_grad(logits.astype(np.float64), np.arange(5))
    assert abs(plain - expected) > 0.1 and np.abs(plain_grad - expected_grad).max() > 0.01  # the rule matters
    np.testing.assert_allclose(float(contrastive_loss(mx.array(logits))), plain, rtol=1e-5)  # no groups: CLIP


def test_one_step_matches_pytorch(tiny_hf):
    model = mlx_clip.load(tiny_hf)
    ids = model.tokenizer(CAPTIONS)
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((len(CAPTIONS), 32, 32, 3)).astype(np.float32)

    # PyTorch reference: same weights, same loss, torch.optim.AdamW with the same two groups.
    torch.manual_seed(0)
    hf = CLIPModel.from_pretrained(tiny_hf).float().train()
    decay, no_decay = [], []
    for name, param in hf.named_parameters():
        (no_decay if no_weight_decay(name) else decay).append(param)
    assert no_decay and decay
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=EPS)
    ref_losses = []
    for step in range(STEPS):
        batch = pixels[::-1].copy() if step else pixels
        out = hf(input_ids=torch.tensor(ids, dtype=torch.long),
                 pixel_values=torch.tensor(batch).permute(0, 3, 1, 2))
        ref_loss = torch_loss(out.logits_per_image, GROUPS)
        opt.zero_grad()
        ref_loss.backward()
        opt.step()
        ref_losses.append(ref_loss.item())

    optimizer = make_optimizer(OptimConfig(lr=LR, weight_decay=WD, warmup=0,
                                           betas=BETAS, eps=EPS), total_steps=100)
    trainer = Trainer(model, optimizer)
    for step in range(STEPS):
        loss = float(trainer.step(ids, pixels[::-1].copy() if step else pixels, groups=GROUPS))
        assert abs(loss - ref_losses[step]) < 1e-5, (step, loss, ref_losses[step])

    ours = W.mlx_to_hf(dict(tree_flatten(model.parameters())))
    theirs = dict(hf.named_parameters())
    initial = CLIPModel.from_pretrained(tiny_hf).state_dict()
    moved = 0
    for name, param in theirs.items():
        mine = np.array(ours[name])
        ref = param.detach().numpy()
        np.testing.assert_allclose(mine, ref, atol=1e-5, rtol=0, err_msg=name)
        moved += not np.allclose(ref, initial[name].numpy())
    assert moved > len(theirs) // 2  # the step really changed the weights


def test_bfloat16_compute_keeps_float32_master_weights(tiny_hf):
    import mlx.core as mx
    model32, model16 = mlx_clip.load(tiny_hf), mlx_clip.load(tiny_hf)
    ids = model32.tokenizer(CAPTIONS)
    pixels = np.random.default_rng(0).standard_normal((len(CAPTIONS), 32, 32, 3)).astype(np.float32)
    config = OptimConfig(lr=LR, weight_decay=WD, warmup=0, betas=BETAS, eps=EPS)
    full = Trainer(model32, make_optimizer(config, total_steps=100))
    mixed = Trainer(model16, make_optimizer(config, total_steps=100), precision="bfloat16")
    assert model16.vision_model.encoder.layers[0].mlp.fc1.weight.dtype == mx.bfloat16
    assert model16.logit_scale.dtype == mx.float32
    for _ in range(3):
        loss32, loss16 = float(full.step(ids, pixels)), float(mixed.step(ids, pixels))
        assert abs(loss32 - loss16) < 0.05, (loss32, loss16)
    master = dict(tree_flatten(mixed.fp32_parameters()))
    reference = dict(tree_flatten(model32.parameters()))
    assert all(v.dtype == mx.float32 for v in master.values())
    name = "vision_model.encoder.layers.0.mlp.fc1.weight"
    diff = np.abs(np.array(master[name]) - np.array(reference[name]))
    assert diff.max() <= 3 * 2 * LR + 1e-6 and diff.mean() < LR / 2  # Adam steps are at most lr each
    # Updates of lr 1e-4 survive in the float32 master (bfloat16 weights would round most away).
    value = np.array(master[name])
    assert not np.array_equal(value, np.array(mx.array(value).astype(mx.bfloat16).astype(mx.float32)))
    start = mlx_clip.load(tiny_hf)
    assert not np.array_equal(np.array(master[name]), np.array(dict(tree_flatten(start.parameters()))[name]))


def test_trimmed_padding_gives_the_same_step(tiny_hf):
    """Dropping padding after the last end-of-text token changes neither loss nor update."""
    from mlx_clip.models.text_length import trim_padding
    full_model, trim_model = mlx_clip.load(tiny_hf), mlx_clip.load(tiny_hf)
    ids = full_model.tokenizer(CAPTIONS)
    assert trim_padding(ids, full_model.tokenizer.eos_token_id).shape == (len(CAPTIONS), 8)
    pixels = np.random.default_rng(1).standard_normal((len(CAPTIONS), 32, 32, 3)).astype(np.float32)
    config = OptimConfig(lr=LR, weight_decay=WD, warmup=0, betas=BETAS, eps=EPS)
    full = Trainer(full_model, make_optimizer(config, total_steps=100))
    trimmed = Trainer(trim_model, make_optimizer(config, total_steps=100), eos_token_id=trim_model.tokenizer.eos_token_id)
    assert abs(float(full.step(ids, pixels)) - float(trimmed.step(ids, pixels))) < 1e-6
    a, b = dict(tree_flatten(full_model.parameters())), dict(tree_flatten(trim_model.parameters()))
    # Adam's first step moves each weight by about lr * sign(gradient); where a gradient is near
    # eps, float noise from the two GEMM shapes shifts it by ~1e-6. A wrong trim (text pooled at
    # the wrong token) changes the updates by ~lr = 1e-4. Same tolerance as the PyTorch parity test.
    for name in a:
        np.testing.assert_allclose(np.array(a[name]), np.array(b[name]), atol=1e-5, err_msg=name)


@pytest.mark.parametrize("lock", [dict(lock_image=True, unlock_last=1), dict(lock_image=True, lock_text=True)])
def test_locked_towers_stay_put(tiny_hf, lock):
    from mlx_clip.models.trainable import LockConfig, apply_locks
    model, start = mlx_clip.load(tiny_hf), mlx_clip.load(tiny_hf)
    apply_locks(model, LockConfig(**lock))
    trainer = Trainer(model, make_optimizer(OptimConfig(lr=1e-2, warmup=0), total_steps=10))
    ids = model.tokenizer(CAPTIONS)
    pixels = np.random.default_rng(2).standard_normal((len(CAPTIONS), 32, 32, 3)).astype(np.float32)
    for _ in range(2):
        trainer.step(ids, pixels)
    after, before = dict(tree_flatten(model.parameters())), dict(tree_flatten(start.parameters()))
    changed = {k for k in after if not np.array_equal(np.array(after[k]), np.array(before[k]))}
    unlocked = lock.get("unlock_last", 0) == 1
    assert "vision_model.embeddings.patch_embedding.weight" not in changed
    assert "vision_model.encoder.layers.0.mlp.fc1.weight" not in changed
    assert ("vision_model.encoder.layers.1.mlp.fc1.weight" in changed) == unlocked
    assert ("visual_projection.weight" in changed) == unlocked
    assert ("text_model.encoder.layers.0.mlp.fc1.weight" in changed) == (not lock.get("lock_text"))
    assert "logit_scale" in changed  # the temperature always trains


def test_frozen_weights_get_no_gradient_and_no_optimizer_state(tiny_hf):
    """Locked towers are frozen modules (patch embedding included): the step's gradients and
    the optimizer's state (what a checkpoint stores) cover exactly the trainable weights."""
    import mlx.nn as nn

    from mlx_clip.models.trainable import LockConfig, apply_locks
    from mlx_clip.train.step import clip_loss
    model = mlx_clip.load(tiny_hf)
    apply_locks(model, LockConfig(lock_image=True))
    trainable = {k for k, _ in tree_flatten(model.trainable_parameters())}
    assert "vision_model.embeddings.patch_embedding.weight" not in trainable
    assert "visual_projection.weight" not in trainable and "text_projection.weight" in trainable
    trainer = Trainer(model, make_optimizer(OptimConfig(lr=LR, warmup=0), total_steps=10))
    ids = model.tokenizer(CAPTIONS)
    pixels = np.random.default_rng(2).standard_normal((len(CAPTIONS), 32, 32, 3)).astype(np.float32)
    _, grads = nn.value_and_grad(model, clip_loss)(model, *trainer.step_inputs(ids, pixels))
    assert {k for k, _ in tree_flatten(grads)} == trainable
    trainer.step(ids, pixels)
    state = {k.split(".", 2)[2].rsplit(".", 1)[0] for k, _ in tree_flatten(trainer.optimizer.state)
             if k.endswith((".m", ".v"))}
    assert state == trainable


class CountingTrainer(Trainer):
    """Counts how often the compiled step is traced (the Python body runs only when tracing)."""

    traces = 0

    def _step_mixed(self, *args):
        self.traces += 1
        return super()._step_mixed(*args)


def test_bfloat16_step_is_traced_once(tiny_hf):
    model = mlx_clip.load(tiny_hf)
    ids = model.tokenizer(CAPTIONS)
    pixels = np.random.default_rng(0).standard_normal((len(CAPTIONS), 32, 32, 3)).astype(np.float32)
    trainer = CountingTrainer(model, make_optimizer(OptimConfig(lr=LR, warmup=0), total_steps=10), precision="bfloat16")
    for _ in range(4):
        trainer.step(ids, pixels)
    assert trainer.traces == 1


def test_non_finite_loss_stops_the_step(tiny_hf):
    from mlx_clip.train.nan_guard import NonFiniteError

    model = mlx_clip.load(tiny_hf)
    ids = model.tokenizer(CAPTIONS)
    pixels = np.random.default_rng(0).standard_normal((len(CAPTIONS), 32, 32, 3)).astype(np.float32)
    trainer = Trainer(model, make_optimizer(OptimConfig(lr=LR, warmup=0), total_steps=10))
    assert np.isfinite(float(trainer.step(ids, pixels)))
    pixels[2] = np.nan  # a poisoned batch
    with pytest.raises(NonFiniteError, match=r"the loss is nan \(lr .*\); try a lower --lr"):
        trainer.step(ids, pixels)


def test_non_finite_gradient_with_a_finite_loss_stops_the_step(tiny_hf):
    from mlx_clip.train.nan_guard import NonFiniteError
    from mlx_clip.train.step import clip_loss

    def loss_with_nan_gradient(model, input_ids, pixel_values, groups=None):
        s = model.logit_scale
        return clip_loss(model, input_ids, pixel_values, groups) + 0 * mx.sqrt(s - s).sum()  # value +0, d/ds NaN

    class NanGradTrainer(Trainer):
        loss_fn = staticmethod(loss_with_nan_gradient)

    model = mlx_clip.load(tiny_hf)
    ids = model.tokenizer(CAPTIONS)
    pixels = np.random.default_rng(0).standard_normal((len(CAPTIONS), 32, 32, 3)).astype(np.float32)
    trainer = NanGradTrainer(model, make_optimizer(OptimConfig(lr=LR, warmup=0), total_steps=10))
    with pytest.raises(NonFiniteError, match="a gradient is nan"):
        trainer.step(ids, pixels)


def test_non_finite_weights_are_not_written(tiny_hf):
    from mlx_clip.train.nan_guard import NonFiniteError, check_finite_weights

    model = mlx_clip.load(tiny_hf)
    check_finite_weights(model.parameters(), "model")
    model.text_projection.weight = model.text_projection.weight * float("inf")
    with pytest.raises(NonFiniteError, match="first: text_projection.weight"):
        check_finite_weights(model.parameters(), "model")

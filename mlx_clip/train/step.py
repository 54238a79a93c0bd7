"""The compiled training step, and bfloat16 compute with float32 master weights.

The NaN guard lives inside the compiled step: it sums every gradient (one extra reduction) and
applies the update only while the loss, that sum and every earlier step were finite. A non-finite
step and every step after it are therefore never applied, and nothing has to be read on the host
before the next step starts: `submit` dispatches a step and returns at once, `settle` reads its
loss later (the training loop reads each step's loss one step late) and raises `NonFiniteError`
for the first non-finite one, so diverged weights are never evaluated, checkpointed or saved
(`nan_guard.check_finite_weights` guards every save as well).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from ..models.family import family_of
from ..models.model import CLIPModel
from ..models.text_length import trim_padding
from .loss import LOSSES
from .nan_guard import NonFiniteError, gradient_sum, keep_where, structure_copy

PRECISIONS = {"float32": mx.float32, "bfloat16": mx.bfloat16}


def set_weights(model: CLIPModel, flat: dict[str, mx.array]) -> None:
    """Replace weights by flat name, in the model's own parameter order (compiled functions
    that capture `model.state` rely on that order staying the same)."""
    order = [k for k, _ in tree_flatten(model.parameters()) if k in flat]
    model.update(tree_unflatten([(k, flat[k]) for k in order]))


@dataclass
class PendingStep:
    """A dispatched step: its loss, gradient sum and whether it was applied, computed in the
    background until `settle`."""

    loss: mx.array
    grad_sum: mx.array
    applied: mx.array


def count_parameters(tree) -> int:
    return sum(v.size for _, v in tree_flatten(tree))


def clip_loss(model: CLIPModel, input_ids: mx.array, pixel_values: mx.array,
              groups: mx.array | None = None) -> mx.array:
    """The model family's loss (contrastive or sigmoid); `groups`: equal for entries showing the same
    image (see loss.py); None: all different.

    One stream: splitting the batch over one MLX stream per core (as embedding does) was measured
    10 % slower per step on 2 quiet cores, with AVX2 and with AVX-512 kernels (bench/README.md).
    """
    return LOSSES[family_of(model).loss](model(input_ids, pixel_values).logits_per_image, groups)


class Trainer:
    """Owns the model, the optimizer and the compiled step: `nn.value_and_grad(model, loss_fn)` and
    the update under `mx.compile(inputs=state, outputs=state)`, as mlx-examples' mnist; frozen
    (locked) modules get no gradient and no optimizer state.

    With gradient checkpointing on (models/model.py Encoder) the step is two compiled functions,
    gradients then update (see `_checkpointed_step`).

    float32: the model's weights are updated in place. bfloat16: the model holds bfloat16
    copies used for the forward and backward pass; the optimizer updates float32 master
    weights (`self.master`) and the copies are refreshed from them after every step. The
    temperature (and SigLIP's bias) stays float32. `fp32_parameters()` gives the weights to save either way.
    """

    def __init__(self, model: CLIPModel, optimizer, precision: str = "float32",
                 eos_token_id: int | None = None):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
        self.model = model
        self.optimizer = optimizer
        self.precision = precision
        family = family_of(model)
        # set: trailing padding is trimmed (see trim_padding), where the family allows it
        self.eos_token_id = eos_token_id if family.trims_padding else None
        self.max_logit_scale = family.max_logit_scale
        self.scalars = family.scalars  # kept float32 under bfloat16
        self.loss_kind = family.loss  # loss.LOSSES' key
        self.compute_dtype = PRECISIONS[precision]
        trainable = model.trainable_parameters()
        optimizer.init(trainable)
        self.master: dict = {}
        self.frozen_fp32: dict = {}
        if precision != "float32":
            self.frozen_fp32 = dict(tree_flatten(model.parameters()))
            self.master.update(tree_map(lambda p: p, trainable))
            self._cast_model_from(self.frozen_fp32)
        self.guard = {"finite": mx.array(True)}  # False from the first non-finite step on
        self._guarded_optimizers = [o for o in getattr(optimizer, "optimizers", [optimizer]) if hasattr(o, "guarded")]
        self.state = [model.state, optimizer.state, mx.random.state, self.master, self.guard]
        self._loss_and_grad = nn.value_and_grad(model, self.loss_fn)
        self._step = mx.compile(self._step_fp32 if precision == "float32" else self._step_mixed,
                                inputs=self.state, outputs=self.state)
        if any(getattr(module, "grad_checkpoint", False) for module in model.modules()):
            self._step = self._checkpointed_step(self._update_fp32 if precision == "float32" else self._update_mixed)

    def _cast(self, name: str, value: mx.array) -> mx.array:
        return value if name in self.scalars else value.astype(self.compute_dtype)

    def _cast_model_from(self, flat: dict) -> None:
        set_weights(self.model, {k: self._cast(k, v) for k, v in flat.items()})

    # Hooks for data-parallel training (mlx_clip.train.distributed.DistributedTrainer).
    loss_fn = staticmethod(clip_loss)  # (model, input_ids, pixel_values, *extra) -> loss

    def reduce_grads(self, grads):
        """Gradients -> the gradients to apply (identity in one process)."""
        return grads

    def _gradients(self, input_ids: mx.array, pixel_values: mx.array, *extra) -> tuple[mx.array, dict]:
        """The loss and the gradients to apply (float32, reduced over processes)."""
        if self.precision != "float32":
            pixel_values = pixel_values.astype(self.compute_dtype)
        loss, grads = self._loss_and_grad(self.model, input_ids, pixel_values, *extra)
        if self.precision != "float32":
            grads = tree_map(lambda g: g.astype(mx.float32), grads)
        return loss, self.reduce_grads(grads)

    def _step_fp32(self, input_ids: mx.array, pixel_values: mx.array, *extra) -> tuple[mx.array, ...]:
        return self._update_fp32(*self._gradients(input_ids, pixel_values, *extra))

    def _keep(self, loss: mx.array, grad_sum: mx.array) -> mx.array:
        """Whether this step's update applies: the loss, the gradients and every earlier step finite.
        Handed to the optimizers that guard their own update (optim.GuardedAdamW)."""
        keep = self.guard["finite"] & mx.isfinite(loss) & mx.isfinite(grad_sum)
        self.guard["finite"] = keep
        for optimizer in self._guarded_optimizers:
            optimizer.keep, optimizer.guarded = keep, {}
        return keep

    def _guarded_arrays(self) -> dict:
        """After the update: the arrays the optimizers guarded themselves, by id (then forgotten)."""
        guarded = {}
        for optimizer in self._guarded_optimizers:
            guarded.update(optimizer.guarded)
            optimizer.keep = None
            optimizer.guarded = {}
        return guarded

    def _update_fp32(self, loss: mx.array, grads: dict) -> tuple[mx.array, ...]:
        grad_sum = gradient_sum(grads)
        keep = self._keep(loss, grad_sum)
        weights_before, state_before = self.model.trainable_parameters(), structure_copy(self.optimizer.state)
        self.optimizer.update(self.model, grads)
        if self.max_logit_scale is not None:
            self.model.logit_scale = mx.minimum(self.model.logit_scale, self.max_logit_scale)
        weights, guarded = self.model.trainable_parameters(), self._guarded_arrays()
        keep_where(keep, weights, weights_before, guarded)
        self.model.update(weights)
        keep_where(keep, self.optimizer.state, state_before, guarded)
        return loss, grad_sum, keep

    def _step_mixed(self, input_ids: mx.array, pixel_values: mx.array, *extra) -> tuple[mx.array, ...]:
        return self._update_mixed(*self._gradients(input_ids, pixel_values, *extra))

    def _update_mixed(self, loss: mx.array, grads: dict) -> tuple[mx.array, ...]:
        grad_sum = gradient_sum(grads)
        keep = self._keep(loss, grad_sum)
        state_before, master_before = structure_copy(self.optimizer.state), dict(tree_flatten(self.master))
        new_master = dict(tree_flatten(self.optimizer.apply_gradients(grads, dict(self.master))))
        if self.max_logit_scale is not None and "logit_scale" in new_master:
            new_master["logit_scale"] = mx.minimum(new_master["logit_scale"], self.max_logit_scale)
        guarded = self._guarded_arrays()
        keep_where(keep, new_master, master_before, guarded)
        keep_where(keep, self.optimizer.state, state_before, guarded)
        # MultiOptimizer merges its groups' trees in group order: put the master weights back in
        # their own order, or the compiled step sees new inputs after step 1 and traces again.
        self.master.update(tree_unflatten([(k, new_master[k]) for k, _ in tree_flatten(self.master)]))
        self._cast_model_from(new_master)
        return loss, grad_sum, keep

    def _checkpointed_step(self, update):
        """With gradient checkpointing (models/model.py Encoder) the gradients are computed and
        evaluated by one compiled function and applied by a second: in one graph with AdamW's update
        MLX schedules the blocks' recomputations early and most of the saving is lost (the step's
        peak above its weights and optimizer state, tests/test_grad_checkpoint.py's model on CPU:
        247 MiB without checkpointing, 194 MiB with it in one graph, 109 MiB split)."""
        gradients = mx.compile(self._gradients, inputs=self.state, outputs=self.state)
        update = mx.compile(update, inputs=self.state, outputs=self.state)

        def step(*args) -> tuple[mx.array, ...]:
            loss, grads = gradients(*args)
            mx.eval(loss, grads)
            return update(loss, grads)

        return step

    def learning_rate(self) -> float:
        """The learning rate of the last step (the schedule's value)."""
        optimizer = getattr(self.optimizer, "optimizers", [self.optimizer])[0]
        return float(optimizer.learning_rate)

    def submit(self, input_ids, pixel_values, **extra) -> PendingStep:
        """Dispatch one update on a batch and return at once: the step runs in the background while
        the caller prepares the next batch (no host sync; `settle` reads the loss later)."""
        pending = PendingStep(*self._step(*self.step_inputs(input_ids, pixel_values, **extra)))
        mx.async_eval(pending.loss, pending.grad_sum, pending.applied, self.state)
        return pending

    def settle(self, pending: PendingStep) -> float:
        """A dispatched step's loss, waiting for that step only. Raises NonFiniteError when its loss or
        a gradient is NaN/inf: that step and every later one were not applied (the weights stay the
        last finite step's), and the run must stop; a step after it raises too (not applied)."""
        value, grad_value = pending.loss.item(), pending.grad_sum.item()
        if not (math.isfinite(value) and math.isfinite(grad_value)):
            what = f"the loss is {value}" if not math.isfinite(value) else f"a gradient is {grad_value}"
            hint = " or --precision float32" if self.precision != "float32" else ""
            raise NonFiniteError(f"{what} (lr {self.learning_rate():.3g}); try a lower --lr{hint}")
        if not pending.applied.item():
            raise NonFiniteError("an earlier step was not finite: this step was not applied")
        return value

    def step(self, input_ids, pixel_values, **extra) -> mx.array:
        """One update on a batch, waited for; returns the loss (evaluated). Raises NonFiniteError
        as `settle` does."""
        pending = self.submit(input_ids, pixel_values, **extra)
        self.settle(pending)
        return pending.loss

    def step_inputs(self, input_ids, pixel_values, groups=None) -> tuple:
        """A batch -> the compiled step's arguments (`groups`: the stream's `image_group`)."""
        input_ids = trim_padding(np.asarray(input_ids), self.eos_token_id)
        if groups is None:  # every entry its own image
            groups = np.arange(len(input_ids))
        return mx.array(input_ids), mx.array(pixel_values), mx.array(np.asarray(groups, np.int32))

    def load_optimizer_state(self, state: dict) -> None:
        """Restore a saved optimizer state in place (the compiled step holds these dicts). A parameter
        the checkpoint holds no moments for keeps its fresh ones: a SigLIP LoRA run saved before its
        bias trained resumes, training the bias from there."""
        optimizers = getattr(self.optimizer, "optimizers", [self.optimizer])
        states = state["states"] if "states" in state else [state]
        for optimizer, saved in zip(optimizers, states, strict=True):
            fresh = {k: v for k, v in optimizer.state.items() if k not in saved}
            optimizer.state.clear()
            optimizer.state.update(saved)
            optimizer.state.update(fresh)

    def fp32_parameters(self) -> dict:
        """All weights in float32 (master weights in bfloat16 mode), as a nested tree."""
        if self.precision == "float32":
            return self.model.parameters()
        merged = dict(self.frozen_fp32)
        merged.update(tree_flatten(self.master))
        return tree_unflatten(list(merged.items()))

    def load_fp32_parameters(self, tree) -> None:
        """Set all weights (and master weights) from a float32 tree, e.g. a checkpoint."""
        if self.precision == "float32":
            set_weights(self.model, dict(tree_flatten(tree)))
            return
        flat = dict(tree_flatten(tree))
        self.frozen_fp32.update(flat)
        trainable = dict(tree_flatten(self.model.trainable_parameters()))
        self.master.update(tree_unflatten([(k, flat[k]) for k in trainable]))
        self._cast_model_from(flat)

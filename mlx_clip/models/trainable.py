"""What a model trains: tower locks (`--lock-image`, `--lock-text`, `--unlock-last`), LoRA
adapters in the blocks the locks leave trainable (lora.py), gradient checkpointing, and the
family's scalars. `make_trainable` applies them in that order; a Trainer (train/step.py) trains
what is trainable when it is made, so prepare() calls this right after loading the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from ..flags import setting
from .family import family_of
from .lora import ALL_LOCKED, LoraConfig, add_adapters
from .model import CLIPModel, set_grad_checkpoint


@dataclass(frozen=True)
class LockConfig:
    """Which towers to freeze, and how many of their last layers to train anyway."""

    lock_image: bool = setting(False, "freeze the image tower")
    lock_text: bool = setting(False, "freeze the text tower")
    unlock_last: int = setting(0, "train the last N layers (and final norm + projection) of locked towers",
                               metavar="N")


def apply_locks(model: CLIPModel, config: LockConfig, lora: LoraConfig | None = None, seed: int = 0) -> None:
    """Freeze locked towers, then unfreeze their last `unlock_last` layers, final norm and projection.
    With `lora` (rank > 0) the blocks left trainable get adapters, and only the adapters train
    (models/lora.py). The family's scalars (the temperature; SigLIP's bias too) train either way:
    the loss needs them fitted to the embeddings, and they weigh nothing."""
    model.unfreeze()
    towers = []
    if config.lock_image:
        towers.append((model.vision_model, "post_layernorm", model.visual_projection))
    if config.lock_text:
        towers.append((model.text_model, "final_layer_norm", model.text_projection))
    for tower, final_norm, projection in towers:
        tower.freeze()
        projection.freeze()
        if config.unlock_last > 0:
            for layer in tower.encoder.layers[-config.unlock_last:]:
                layer.unfreeze()
            getattr(tower, final_norm).unfreeze()
            projection.unfreeze()
    if lora is not None and lora.rank and not add_adapters(model, lora, seed):
        raise InputError(ALL_LOCKED)
    model.unfreeze(keys=list(family_of(model).scalars), recurse=False)


def make_trainable(model: CLIPModel, locks: LockConfig, lora: LoraConfig | None = None, seed: int = 0,
                   grad_checkpoint: bool = False) -> None:
    """Locks, then LoRA adapters where the locks leave blocks trainable, then checkpointing."""
    apply_locks(model, locks, lora, seed)
    set_grad_checkpoint(model, grad_checkpoint)

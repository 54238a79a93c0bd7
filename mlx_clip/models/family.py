"""The model families (CLIP, SigLIP): the one owner of every decision that depends on which it is.

A family is read from config.json's `model_type` (or, for old CLIP configs, `architectures`).
Everything else asks this registry: the loss, whether text padding may be trimmed, the
temperature clamp, which scalars (temperature, bias) always train, the config and module
classes, the names written into exports and cards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from .config import CLIPConfig, read_config_json
from .model import CLIPModel
from .siglip import SiglipConfig, SiglipModel
from .siglip_tokenizer import SiglipTokenizer
from .tokenizer import CLIPTokenizer


@dataclass(frozen=True)
class Family:
    model_type: str  # config.json's model_type
    name: str  # what cards and messages call it
    architecture: str  # transformers' class for the whole model (config.json "architectures")
    config_class: type
    model_class: type
    tokenizer_class: type
    loss: str  # "softmax": CLIP's contrastive cross-entropy; "sigmoid": SigLIP's pairwise loss
    trims_padding: bool  # causal text pooled at end-of-text: trailing padding changes nothing
    max_logit_scale: float | None  # clamp of the log temperature after each step (None: none)
    # the model's own scalars beside the towers (the loss's log temperature; SigLIP's bias too):
    # they train whatever the locks and LoRA freeze, stay float32 under bfloat16, and every rank
    # holds their whole gradient (each computes the global batch's logits)
    scalars: tuple[str, ...]
    processor_class: str  # transformers' processor, for the model card's snippet

    def default_preprocessor(self, image_size: int) -> dict[str, Any]:
        """preprocessor_config.json for a folder without one: transformers' defaults for the family."""
        if self.model_type == "siglip":
            return {"image_processor_type": "SiglipImageProcessor", "size": {"height": image_size, "width": image_size},
                    "resample": 3, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
        return {}

    def sentence_transformers_files(self, context_length: int) -> dict[str, Any]:
        """The sentence-transformers files of an export: file name -> JSON content.

        CLIP: its CLIPModel module. SigLIP: the multimodal Transformer module (sentence-transformers
        >= 5) calling get_text_features / get_image_features, with texts padded to max_length and
        no attention mask, as SigLIP was trained (its default pads to the batch's longest text
        and masks, which changes every shorter text's embedding).
        """
        settings = {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}
        if self.model_type == "clip":
            modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.CLIPModel"}]
            return {"modules.json": modules, "config_sentence_transformers.json": settings}
        modules = [{"idx": 0, "name": "0", "path": "",
                    "type": "sentence_transformers.base.modules.transformer.Transformer"}]
        module = {
            "transformer_task": "feature-extraction",
            "modality_config": {"text": {"method": "get_text_features", "method_output_name": "pooler_output"},
                                "image": {"method": "get_image_features", "method_output_name": "pooler_output"}},
            "module_output_name": "sentence_embedding",
            "processing_kwargs": {"text": {"padding": "max_length", "max_length": context_length,
                                           "truncation": True, "return_attention_mask": False}},
        }
        return {"modules.json": modules, "sentence_bert_config.json": module,
                "config_sentence_transformers.json": dict(settings, model_type="SentenceTransformer")}


FAMILIES: dict[str, Family] = {
    "clip": Family("clip", "CLIP", "CLIPModel", CLIPConfig, CLIPModel, CLIPTokenizer, loss="softmax", trims_padding=True,
                   # CLIP and open_clip clamp the temperature at 100
                   max_logit_scale=math.log(100.0), scalars=("logit_scale",),
                   processor_class="CLIPProcessor"),
    # SigLIP pools the text at its last position, which sees every position (no causal mask):
    # the padding to max_length is part of the input. Pretrained SigLIPs hold exp(scale) above
    # 100, so CLIP's clamp would change the model on its first step.
    "siglip": Family("siglip", "SigLIP", "SiglipModel", SiglipConfig, SiglipModel, SiglipTokenizer,
                     loss="sigmoid",
                     trims_padding=False, max_logit_scale=None, scalars=("logit_scale", "logit_bias"),
                     processor_class="AutoProcessor"),
}


def family_for(raw: dict[str, Any], source: str = "config.json") -> Family:
    """The family of a config.json; anything else is one line naming what it is."""
    model_type = raw.get("model_type")
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    architectures = raw.get("architectures") or []
    for family in FAMILIES.values():
        if family.architecture in architectures:
            return family
    if model_type == "siglip2":
        raise InputError(f"{source}: SigLIP 2 NaFlex (model_type 'siglip2', variable resolution) is not supported; "
                         "use a fixed-resolution SigLIP 2 checkpoint such as google/siglip2-base-patch16-224")
    found = model_type or (architectures[0] if architectures else "no model_type")
    raise InputError(f"{source}: not a CLIP config (model_type is {found!r}; expected 'clip', or 'siglip' for SigLIP)")


def read_config(path: str | Path) -> CLIPConfig | SiglipConfig:
    """A model folder's config.json as its family's config."""
    raw = read_config_json(path)
    return family_for(raw, str(path)).config_class.from_dict(raw, source=str(path))


def family_of(model_or_config: Any) -> Family:
    """The family of a model (CLIPModel, SiglipModel or a subclass) or of its config."""
    for family in FAMILIES.values():
        if isinstance(model_or_config, (family.model_class, family.config_class)):
            return family
    raise TypeError(f"not a CLIP or SigLIP model or config: {type(model_or_config).__name__}")

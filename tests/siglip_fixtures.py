"""Builders for test SigLIPs: tiny random transformers SiglipModels with locally trained tokenizers.

No network: SigLIP v1's tokenizer is a SentencePiece unigram model (T5's ids: pad 0, </s> 1,
<unk> 2) trained here with `sentencepiece`; SigLIP 2's is a Gemma-style byte-fallback BPE
`tokenizer.json` trained here with `tokenizers`. The weights are random.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   image_size=32, patch_size=8)
TINY_TEXT = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=16, projection_size=32)
BASE_VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   image_size=224, patch_size=16)
BASE_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 max_position_embeddings=64)
VOCAB_SIZE = 500

CORPUS_WORDS = ("a photo of the red green blue yellow circle square triangle bronze coin amphora found at "
                "from age period object museum catalogue record image picture painting drawing map letter "
                "iron roman greek ancient modern small large broken whole glass pottery stone wooden").split()


def corpus(lines: int = 1500) -> list[str]:
    import numpy as np

    rng = np.random.default_rng(0)
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    made = ["".join(rng.choice(syllables, size=int(rng.integers(1, 4)))) for _ in range(400)]
    words_pool = list(CORPUS_WORDS) * 8 + made
    out = []
    for i in range(lines):
        words = rng.choice(words_pool, size=int(rng.integers(3, 12)))
        out.append(" ".join(words) + (f" {i}" if i % 7 == 0 else "") + (", café déjà vu!" if i % 11 == 0 else ""))
    return out


def train_spiece(folder: Path, vocab_size: int = VOCAB_SIZE) -> Path:
    """A T5-style SentencePiece unigram model (nmt_nfkc, dummy prefix) -> folder/spiece.model."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()), model_prefix=str(folder / "spiece"), vocab_size=vocab_size,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0,
        normalization_rule_name="nmt_nfkc", minloglevel=2)
    return folder / "spiece.model"


def gemma_tokenizer(vocab_size: int = VOCAB_SIZE, **config):
    """A Gemma-style tokenizer (byte-fallback BPE, spaces as ▁) as transformers' GemmaTokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    bpe.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials + byte_tokens, show_progress=False)
    bpe.train_from_iterator(corpus(), trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    return GemmaTokenizer(vocab=state["vocab"], merges=merges, **config)


def make_hf_siglip(folder: Path, vision: dict | None = None, text: dict | None = None, seed: int = 0,
                   tokenizer: str = "spiece", resample: int = 2, tokenizer_config: dict | None = None,
                   logit_scale: float = 4.7, logit_bias: float = -3.0, config_file_extra: dict | None = None) -> Path:
    """Save a random transformers SiglipModel with tokenizer and image processor to `folder`.

    tokenizer "spiece": SigLIP v1's files (spiece.model only, SiglipTokenizer); "gemma": SigLIP 2's
    (a GemmaTokenizer tokenizer.json, extra `tokenizer_config` settings passed to it).
    `config_file_extra` is merged into the saved tokenizer_config.json (settings transformers
    applies at load time, over what tokenizer.json says).
    """
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipTokenizer

    vision = dict(TINY_VISION if vision is None else vision)
    text = dict(TINY_TEXT if text is None else text, vocab_size=VOCAB_SIZE)
    if tokenizer == "gemma":
        text.update(pad_token_id=0, eos_token_id=1, bos_token_id=2)
    else:
        text.update(pad_token_id=1, eos_token_id=1, bos_token_id=None)
    text.setdefault("bos_token_id", None)
    config = SiglipConfig(text_config=text, vision_config=vision)
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    with torch.no_grad():  # default: pretrained-like (exp(4.7) = 110 > CLIP's clamp of 100); SigLIP's
        model.logit_scale.fill_(logit_scale)  # training init is ln 10 and -10
        model.logit_bias.fill_(logit_bias)
        generator = torch.Generator().manual_seed(seed)
        for name, param in model.named_parameters():  # biases start at 0: make each one count
            if name.endswith("bias") and name != "logit_bias" and not param.any():
                param.copy_(0.02 * torch.randn(param.shape, generator=generator))
    model.save_pretrained(folder)
    length = text["max_position_embeddings"]
    if tokenizer == "gemma":
        gemma_tokenizer(model_max_length=length, **(tokenizer_config or {})).save_pretrained(folder)
        if config_file_extra:
            path = folder / "tokenizer_config.json"
            path.write_text(json.dumps(dict(json.loads(path.read_text()), **config_file_extra), indent=2))
    else:
        spiece = train_spiece(folder / "_spiece")
        SiglipTokenizer(vocab_file=str(spiece), model_max_length=length).save_pretrained(folder)
    size = vision["image_size"]
    SiglipImageProcessor(size={"height": size, "width": size}, resample=resample,
                         image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(folder)
    return folder

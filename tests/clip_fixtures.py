"""Builders for test models: tiny transformers CLIPModels with the real OpenAI vocabulary.

No network: the vocabulary comes from the `open-clip-torch` wheel
(`open_clip/bpe_simple_vocab_16e6.txt.gz`, MIT), the weights are random.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=4, image_size=32, patch_size=8)
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, max_position_embeddings=77)
B32_VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, image_size=224, patch_size=32)
B32_TEXT = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                num_attention_heads=8, max_position_embeddings=77)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@lru_cache(maxsize=1)
def bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("tests need open-clip-torch (pip install --no-deps open-clip-torch) for the vocabulary")
    return Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"


def write_openai_vocab(folder: Path) -> Path:
    """Write OpenAI CLIP's vocab.json and merges.txt (49,408 tokens) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(bpe_path()).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return folder


def make_hf_clip(folder: Path, vision: dict | None = None, text: dict | None = None,
                 projection_dim: int = 16, hidden_act: str = "quick_gelu", seed: int = 0,
                 vocab_folder: Path | None = None) -> Path:
    """Save a random transformers CLIPModel with tokenizer and image processor to `folder`."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    vision = dict(TINY_VISION if vision is None else vision, hidden_act=hidden_act)
    text = dict(TINY_TEXT if text is None else text, hidden_act=hidden_act)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    with torch.no_grad():  # a non-trivial temperature and class embedding
        model.logit_scale.fill_(2.0)
    model.save_pretrained(folder)
    vocab_folder = vocab_folder or write_openai_vocab(folder / "_vocab")
    tokenizer = CLIPTokenizer.from_pretrained(vocab_folder)
    tokenizer.model_max_length = text["max_position_embeddings"]
    tokenizer.save_pretrained(folder)
    size = vision["image_size"]
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(folder)
    return folder

"""Build a tiny random CLIP for the offline tour: `python -m mlx_clip.demo.tiny_model OUT`.

A model folder needs no download and no PyTorch: the weights are MLX's random initialisation,
the tokenizer a small byte-level BPE (CLIP's pipeline: lowercase, CLIP's split, `</w>` word ends,
start/end-of-text tokens) trained with `tokenizers` on the bundled emoji records' words. It
loads and trains like any CLIP folder; its scores say nothing about a real CLIP.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mlx.core as mx
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer

from ..io import write_json
from ..models.clip import CLIP
from ..models.config import CLIPConfig
from ..models.preprocess import ImageProcessor
from ..models.tokenizer import BOS, CLIP_SPLIT, EOS, CLIPTokenizer

EMOJI_RECORDS = Path(__file__).parent / "emoji" / "records.jsonl"
IMAGE_SIZE = 64
LAYERS = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              hidden_act="quick_gelu", layer_norm_eps=1e-5)


def emoji_words() -> list[str]:
    """The text of every bundled emoji record (names, categories, keywords): the BPE's corpus."""
    texts = []
    for line in EMOJI_RECORDS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            texts.extend(str(v) for k, v in record.items() if k != "image_path")
    return texts


def train_tokenizer(texts: list[str], vocab_size: int = 2000) -> Tokenizer:
    """A byte-level BPE with CLIP's normaliser, split and special tokens, trained on `texts`."""
    tokenizer = Tokenizer(BPE(continuing_subword_prefix="", end_of_word_suffix="</w>",
                              fuse_unk=False, unk_token=EOS))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=vocab_size, show_progress=False, end_of_word_suffix="</w>",
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                         special_tokens=[AddedToken(t, normalized=False, special=True) for t in (BOS, EOS)])
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.RobertaProcessing(
        (EOS, tokenizer.token_to_id(EOS)), (BOS, tokenizer.token_to_id(BOS)),
        trim_offsets=False, add_prefix_space=False)
    return tokenizer


def build_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """Write a random 64-px CLIP (about 0.5M parameters) with its tokenizer into `folder`."""
    folder = Path(folder)
    tokenizer = train_tokenizer(emoji_words())
    context = 77
    raw = {
        "model_type": "clip", "architectures": ["CLIPModel"], "projection_dim": 32,
        "logit_scale_init_value": 2.6592,
        "text_config": dict(LAYERS, vocab_size=tokenizer.get_vocab_size(), max_position_embeddings=context,
                            bos_token_id=tokenizer.token_to_id(BOS), eos_token_id=tokenizer.token_to_id(EOS),
                            pad_token_id=tokenizer.token_to_id(EOS)),
        "vision_config": dict(LAYERS, image_size=IMAGE_SIZE, patch_size=16, num_channels=3),
    }
    preprocessor = {
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": IMAGE_SIZE},
        "do_center_crop": True, "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}, "resample": 3,
        "do_normalize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
    }
    mx.random.seed(seed)
    model = CLIP(CLIPConfig.from_dict(raw), CLIPTokenizer(tokenizer, context),
                 ImageProcessor.from_dict(preprocessor, IMAGE_SIZE))
    mx.eval(model.parameters())
    model.save(folder)
    write_json(folder / "preprocessor_config.json", preprocessor)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlx_clip.demo.tiny_model",
        description="Build a tiny random CLIP (64 px, no download, no PyTorch) for trying the tools offline.")
    parser.add_argument("out", help="folder to write the model into")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    args = parser.parse_args(argv)
    folder = build_tiny_clip(args.out, args.seed)
    print(f"tiny random CLIP written to {folder} (for trying the tools; it knows nothing yet)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

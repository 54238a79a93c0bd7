"""Build a tiny random CLIP for the offline tour: `python -m mlx_clip.demo.tiny_model OUT`.

A model folder needs no download and no PyTorch: the weights are MLX's random initialisation
(seeded), the tokenizer one id per word of the bundled emoji records (CLIP's lowercasing, split
and start/end-of-text tokens, through `tokenizers`). The same seed gives the same folder, byte
for byte. It loads and trains like any CLIP folder; its scores say nothing about a real CLIP.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mlx.core as mx
from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel

from ..io import write_json
from ..models.clip import CLIP
from ..models.config import CLIPConfig
from ..models.preprocess import ImageProcessor
from ..models.tokenizer import BOS, CLIP_SPLIT, EOS, CLIPTokenizer

EMOJI_RECORDS = Path(__file__).parent / "emoji" / "records.jsonl"
UNK = "<|unk|>"
# words captions and label prompts add around the records' own (the default "a photo of {label}")
PROMPT_WORDS = "a an the of and with in on at for by from to emoji emojis photo picture image icon symbol sign"
IMAGE_SIZE = 64
LAYERS = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              hidden_act="quick_gelu", layer_norm_eps=1e-5)


def emoji_texts() -> list[str]:
    """The text of every bundled emoji record (names, categories, keywords): the vocabulary's source."""
    texts = []
    for line in EMOJI_RECORDS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            for key, value in record.items():
                if key != "image_path":
                    texts.append(" ".join(map(str, value)) if isinstance(value, list) else str(value))
    return texts + [PROMPT_WORDS]


def word_tokenizer(texts: list[str]) -> Tokenizer:
    """A word-level tokenizer with CLIP's normaliser, split and start/end-of-text tokens: one id per
    word of `texts` (sorted, so the same texts always give the same ids; a BPE trainer breaks ties
    differently from run to run); an unknown word reads as UNK (never as end-of-text, where the
    text tower would stop)."""
    split = pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True)
    words = sorted({piece for text in texts for piece, _ in split.pre_tokenize_str(text.lower())})
    vocab = {token: index for index, token in enumerate([BOS, EOS, UNK, *words])}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = split
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in (BOS, EOS, UNK)])
    tokenizer.post_processor = processors.RobertaProcessing((EOS, vocab[EOS]), (BOS, vocab[BOS]),
                                                            trim_offsets=False, add_prefix_space=False)
    return tokenizer


def build_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """Write a random 64-px CLIP (about 0.3M parameters) with its tokenizer into `folder`."""
    folder = Path(folder)
    tokenizer = word_tokenizer(emoji_texts())
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
    # transformers' CLIPTokenizer would rebuild a BPE from the vocabulary: read tokenizer.json as it is
    write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context, "bos_token": BOS,
        "eos_token": EOS, "unk_token": UNK, "pad_token": EOS, "clean_up_tokenization_spaces": False})
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

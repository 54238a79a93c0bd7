"""SigLIP's tokenizers through the `tokenizers` library, ids equal to transformers'.

SigLIP 2 ships a Gemma `tokenizer.json`: read as it is (transformers 5 also ignores
tokenizer_config.json's add_bos_token / add_eos_token when there is one), padded on the side
transformers pads (the config's padding_side, else the file's, else left for Gemma). SigLIP v1 repos ship only `spiece.model`, which
transformers reads with the sentencepiece runtime; here it is converted ONCE, at load time,
into an equivalent `tokenizer.json` (saved with the model, so later loads and exports need no
sentencepiece). Reading the model file takes `sentencepiece`'s protobuf schema; nothing at
embedding or training time does.
"""

from __future__ import annotations

import string
import sys
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram

from ..errors import InputError
from ..io import read_small_bytes, read_small_text, write_bytes, write_text
from .tokenizer import PaddedTokenizer, TokenizerUnreadable, read_json_object, read_tokenizer_file

TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json", "special_tokens_map.json")


def _char_class(chars) -> str:
    """A regex class of exactly these characters (Oniguruma \\x{...} escapes, no surprises)."""
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in chars) + "]"


# str.isspace() characters, as SiglipTokenizer's re.sub(r"\s+", " ") and str.strip() see them.
_SPACES = _char_class(chr(c) for c in range(0x3000 + 1) if chr(c).isspace())
_PUNCTUATION = _char_class(string.punctuation)


def _token(value: Any, default: str | None) -> str | None:
    """A special token from tokenizer_config.json: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content", default)
    return value if isinstance(value, str) else default


def spiece_to_tokenizer(path: Path, config: dict[str, Any]) -> Tokenizer:
    """transformers' SiglipTokenizer as a `tokenizers` pipeline, from its spiece.model.

    SiglipTokenizer lowercases the text, deletes ASCII punctuation, collapses whitespace, strips
    it, lets SentencePiece normalise it (its charsmap and whitespace rule) and puts one "▁" first
    (its own, the model's dummy prefix being cancelled by the `unk_token` trick); then `</s>`.
    """
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:
        raise TokenizerUnreadable(f"{path}: this SigLIP tokenizer is a SentencePiece model (no tokenizer.json); reading it "
                         "needs `pip install sentencepiece protobuf` once (saved or exported models then carry a "
                         "tokenizer.json)") from None
    proto = sentencepiece_model_pb2.ModelProto()
    data = read_small_bytes(path)
    try:
        proto.ParseFromString(data)
    except Exception as err:  # protobuf's DecodeError and friends
        raise TokenizerUnreadable(f"{path}: not a SentencePiece model ({err})") from None
    if proto.trainer_spec.model_type != 1:  # 1 = UNIGRAM, what SigLIP's (T5's) vocabulary is
        raise TokenizerUnreadable(f"{path}: a SentencePiece model of type {proto.trainer_spec.model_type}; SigLIP's is unigram (1)")
    tokenizer = Tokenizer(Unigram([(p.piece, p.score) for p in proto.pieces], unk_id=proto.trainer_spec.unk_id,
                                  byte_fallback=proto.trainer_spec.byte_fallback))
    steps = [normalizers.Replace("▁", " ")]
    if config.get("do_lower_case", True):
        steps.append(normalizers.Lowercase())
    steps += [  # canonicalize_text: punctuation out, whitespace runs to one space, stripped
        normalizers.Replace(Regex(_PUNCTUATION), ""),
        normalizers.Replace(Regex(_SPACES + "+"), " "),
        normalizers.Replace(Regex("^ | $"), ""),
    ]
    spec = proto.normalizer_spec
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    # SentencePiece's own whitespace rule, then the one "▁" SiglipTokenizer.tokenize puts first
    steps += [normalizers.Replace(Regex(r"^ +| +$"), ""), normalizers.Replace(Regex(" {2,}"), " "),
              normalizers.Replace(" ", "▁")]
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    eos = _token(config.get("eos_token"), "</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, tokenizer.token_to_id(eos))])
    return tokenizer


class SiglipTokenizer(PaddedTokenizer):
    """Texts -> (N, context_length) int32 ids, padded to max_length as SigLIP was trained."""

    def __init__(self, tokenizer: Tokenizer, context_length: int, pad_token: str, eos_token: str | None,
                 padding_side: str = "right", folder: Path | None = None):
        self.folder = folder
        self.context_length = context_length
        self.padding_side = padding_side
        self._tokenizer = tokenizer
        self.pad_token_id = tokenizer.token_to_id(pad_token)
        if self.pad_token_id is None:
            raise InputError(f"{folder}: the pad token {pad_token!r} is not in the tokenizer's vocabulary")
        self.eos_token_id = tokenizer.token_to_id(eos_token) if eos_token else None
        self.apply_limits()

    @classmethod
    def from_folder(cls, folder: str | Path, context_length: int = 64) -> "SiglipTokenizer":
        folder = Path(folder)
        config_path = folder / "tokenizer_config.json"
        config = read_tokenizer_file(config_path, read_json_object) if config_path.is_file() else {}
        if (folder / "tokenizer.json").is_file():
            # as transformers 5: the file's template wins over the config's add_bos/eos_token
            tokenizer = read_tokenizer_file(folder / "tokenizer.json", lambda p: Tokenizer.from_str(read_small_text(p)))
        elif (folder / "spiece.model").is_file():
            print(f"{folder}: converting spiece.model to a tokenizer.json", file=sys.stderr)
            tokenizer = spiece_to_tokenizer(folder / "spiece.model", config)
        else:
            raise InputError(f"{folder}: no tokenizer (needs tokenizer.json or spiece.model)")
        gemma = str(config.get("tokenizer_class", "")).startswith("Gemma")
        padding = tokenizer.padding or {}
        side = config.get("padding_side") or padding.get("direction") or ("left" if gemma else "right")
        default_pad = "<pad>" if gemma else "</s>"
        return cls(tokenizer, context_length, _token(config.get("pad_token"), default_pad) or default_pad,
                   _token(config.get("eos_token"), "<eos>" if gemma else "</s>"), side, folder)

    def save(self, folder: str | Path) -> None:
        """Copy the source's tokenizer files into `folder`, and write the tokenizer.json if it had none."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in TOKENIZER_FILES:
            source = self.folder / name if self.folder is not None else None
            if source is not None and source.is_file() and source.resolve() != (folder / name).resolve():
                write_bytes(folder / name, source.read_bytes())
        if self.folder is None or not (self.folder / "tokenizer.json").is_file():  # converted here
            saved = Tokenizer.from_str(self._tokenizer.to_str())
            saved.no_padding()
            saved.no_truncation()
            write_text(folder / "tokenizer.json", saved.to_str(pretty=True))

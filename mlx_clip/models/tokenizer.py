"""CLIP's byte-level BPE through the `tokenizers` library, ids equal to transformers' CLIPTokenizer.

Reads `tokenizer.json`, or `vocab.json` + `merges.txt`, from a model folder, and pads and
truncates every text to the model's context length with end-of-text kept last.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from ..errors import InputError
from ..io import read_small_text, write_bytes, write_text

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
TOKENIZER_FILES = (
    "tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
)
# transformers' CLIPTokenizer pre-tokenisation pattern (the original CLIP regex).
CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


class TokenizerUnreadable(InputError):
    """The folder has tokenizer files that cannot be read (unlike no files at all, which only stops
    embedding texts, this stops loading): one line naming the file."""


def read_tokenizer_file(path: Path, read):
    """`read(path)`'s result; any failure (bad JSON, a tokenizer.json the tokenizers library
    refuses, wrong types, a file too large to read) becomes one TokenizerUnreadable line naming
    the file."""
    try:
        return read(path)
    except TokenizerUnreadable:
        raise
    except InputError as err:  # e.g. a file over the settings-file size (io.read_small_bytes)
        raise TokenizerUnreadable(str(err)) from None
    except Exception as err:  # json, UnicodeDecodeError, tokenizers' own Exception, TypeError ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise TokenizerUnreadable(f"{path}: not a readable tokenizer file ({first})") from None


def read_json_object(path: Path) -> dict:
    """A tokenizer's JSON settings file (tokenizer_config.json) as a dict."""
    data = json.loads(read_small_text(path))
    if not isinstance(data, dict):
        raise TokenizerUnreadable(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _from_vocab_and_merges(vocab_path: Path, merges_path: Path) -> Tokenizer:
    """Build the same pipeline as transformers' CLIPTokenizer from the two classic files."""
    vocab = json.loads(read_small_text(vocab_path))
    lines = read_small_text(merges_path).split("\n")
    merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
    tokenizer = Tokenizer(
        BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
            end_of_word_suffix="</w>", fuse_unk=False, unk_token=EOS)
    )
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in (BOS, EOS)])
    tokenizer.post_processor = processors.RobertaProcessing(
        (EOS, vocab[EOS]), (BOS, vocab[BOS]), trim_offsets=False, add_prefix_space=False
    )
    return tokenizer


class PaddedTokenizer:
    """A `tokenizers.Tokenizer` that pads and truncates every text to `context_length` (CLIP and
    SigLIP both do): texts -> (N, context_length) int32 ids, and token counts before truncation."""

    context_length: int
    pad_token_id: int
    padding_side: str = "right"

    def apply_limits(self) -> None:
        """Pad and truncate to `context_length` (undone for a moment by `count_tokens`)."""
        self._tokenizer.enable_truncation(max_length=self.context_length)
        self._tokenizer.enable_padding(direction=self.padding_side, length=self.context_length,
                                       pad_id=self.pad_token_id, pad_token=self._tokenizer.id_to_token(self.pad_token_id))

    def __call__(self, texts: str | list[str]) -> np.ndarray:
        """Token ids, shape (N, context_length), int32. Longer texts are truncated, never an error."""
        if isinstance(texts, str):
            texts = [texts]
        encodings = self._tokenizer.encode_batch([str(t) for t in texts])
        return np.array([e.ids for e in encodings], dtype=np.int32).reshape(len(texts), self.context_length)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens each text takes with its special tokens, before truncation."""
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        try:
            return [len(e.ids) for e in self._tokenizer.encode_batch([str(t) for t in texts])]
        finally:
            self.apply_limits()


class CLIPTokenizer(PaddedTokenizer):
    """Texts -> (N, context_length) int32 token ids, padded and truncated like transformers."""

    def __init__(self, tokenizer: Tokenizer, context_length: int = 77, pad_token: str = EOS,
                 folder: Path | None = None):
        self.folder = folder
        self.context_length = context_length
        self._tokenizer = tokenizer
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            pad_token, pad_id = EOS, tokenizer.token_to_id(EOS)
        if pad_id is None or tokenizer.token_to_id(BOS) is None:
            raise InputError(f"{folder}: tokenizer has no {BOS} / {EOS} tokens; is it a CLIP tokenizer?")
        self.pad_token_id = pad_id
        self.eos_token_id = tokenizer.token_to_id(EOS)
        self.bos_token_id = tokenizer.token_to_id(BOS)
        self.apply_limits()

    @classmethod
    def from_folder(cls, folder: str | Path, context_length: int = 77) -> "CLIPTokenizer":
        folder = Path(folder)
        pad_token = EOS
        config_path = folder / "tokenizer_config.json"
        if config_path.is_file():
            pad = read_tokenizer_file(config_path, read_json_object).get("pad_token", EOS)
            pad_token = pad.get("content", EOS) if isinstance(pad, dict) else (pad or EOS)
            if not isinstance(pad_token, str):
                raise TokenizerUnreadable(f"{config_path}: pad_token is {pad_token!r}, not a token")
        if (folder / "tokenizer.json").is_file():
            tokenizer = read_tokenizer_file(folder / "tokenizer.json", lambda p: Tokenizer.from_str(read_small_text(p)))
        elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            tokenizer = read_tokenizer_file(folder / "vocab.json",
                                            lambda p: _from_vocab_and_merges(p, folder / "merges.txt"))
        else:
            raise InputError(
                f"{folder}: no tokenizer (needs tokenizer.json, or vocab.json and merges.txt)"
            )
        return cls(tokenizer, context_length, pad_token, folder)

    def save(self, folder: str | Path) -> None:
        """Write the tokenizer files into `folder` (copies of the originals where there are)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        copied = set()
        if self.folder is not None:
            for name in TOKENIZER_FILES:
                source = self.folder / name
                if source.is_file() and source.resolve() != (folder / name).resolve():
                    write_bytes(folder / name, source.read_bytes())
                if (folder / name).is_file():
                    copied.add(name)
        if "tokenizer.json" not in copied:
            saved = Tokenizer.from_str(self._tokenizer.to_str())
            saved.no_padding()
            saved.no_truncation()
            write_text(folder / "tokenizer.json", saved.to_str(pretty=True))
        if "tokenizer_config.json" not in copied:
            config = {
                "tokenizer_class": "CLIPTokenizer", "model_max_length": self.context_length,
                "bos_token": BOS, "eos_token": EOS, "unk_token": EOS,
                "pad_token": self._tokenizer.id_to_token(self.pad_token_id),
                "do_lower_case": True, "clean_up_tokenization_spaces": False,
            }
            write_text(folder / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")

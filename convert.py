#!/usr/bin/env python
"""Convert CLIP weights between Hugging Face and MLX folders.

  python convert.py --hf-path openai/clip-vit-base-patch32 --mlx-path mlx_models/b32
  python convert.py --to-hf --mlx-path runs/demo/model --hf-path exports/demo
"""

from __future__ import annotations

import argparse
import sys

import mlx_clip
from mlx_clip.errors import InputError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Convert CLIP between Hugging Face (transformers / sentence-transformers) and MLX folders.",
    )
    parser.add_argument("--hf-path", required=True,
                        help="HF model: a local folder or a hub repo id (input), or with --to-hf the folder to write")
    parser.add_argument("--mlx-path", required=True,
                        help="MLX model folder: the folder to write, or with --to-hf the folder to read")
    parser.add_argument("--to-hf", action="store_true",
                        help="convert MLX -> HF (writes model.safetensors, config, tokenizer, preprocessor "
                             "and sentence-transformers files) instead of HF -> MLX")
    parser.add_argument("--dtype", choices=sorted(mlx_clip.clip.DTYPES), default=None,
                        help="store the weights in this dtype (default: as stored in the source). "
                             "float32 on CPUs; bfloat16/float16 halve memory on Apple GPUs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.to_hf:
            model = mlx_clip.load(args.mlx_path, dtype=args.dtype)
            out = mlx_clip.export_hf(model, args.hf_path)
        else:
            model = mlx_clip.load(args.hf_path, dtype=args.dtype)
            out = model.save(args.mlx_path)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({model.dtype}, {sum(v.size for _, v in mlx_clip.clip.tree_flatten(model.parameters())):,} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

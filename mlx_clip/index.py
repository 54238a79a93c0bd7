"""`python -m mlx_clip.index` and the `mlx-clip-index` console script; the command is mlx_clip/use/index.py."""

import sys

from .use.index import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())

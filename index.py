#!/usr/bin/env python3
"""index.py: a thin entry point; the command lives in mlx_clip/use/index.py (also `python -m mlx_clip.index`
and the `mlx-clip-index` console script)."""

import sys

from mlx_clip.index import main

if __name__ == "__main__":
    sys.exit(main())

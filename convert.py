#!/usr/bin/env python3
"""convert.py: a thin entry point; the command lives in mlx_clip/convert.py (also `python -m mlx_clip.convert`
and the `mlx-clip-convert` console script)."""

import sys

from mlx_clip.convert import main

if __name__ == "__main__":
    sys.exit(main())

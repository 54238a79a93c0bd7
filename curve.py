#!/usr/bin/env python3
"""curve.py: a thin entry point; the command lives in mlx_clip/curve.py (also `python -m mlx_clip.curve`
and the `mlx-clip-curve` console script)."""

import sys

from mlx_clip.curve import main

if __name__ == "__main__":
    sys.exit(main())

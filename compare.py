#!/usr/bin/env python3
"""compare.py: a thin entry point; the command lives in mlx_clip/compare.py (also `python -m mlx_clip.compare`
and the `mlx-clip-compare` console script)."""

import sys

from mlx_clip.compare import main

if __name__ == "__main__":
    sys.exit(main())

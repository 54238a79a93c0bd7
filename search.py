#!/usr/bin/env python3
"""search.py: a thin entry point; the command lives in mlx_clip/search.py (also `python -m mlx_clip.search`
and the `mlx-clip-search` console script)."""

import sys

from mlx_clip.search import main

if __name__ == "__main__":
    sys.exit(main())

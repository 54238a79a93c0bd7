#!/usr/bin/env python3
"""fetch.py: a thin entry point; the command lives in mlx_clip/fetch.py (also `python -m mlx_clip.fetch`
and the `mlx-clip-fetch` console script)."""

import sys

from mlx_clip.fetch import main

if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""finetune.py: a thin entry point; the command lives in mlx_clip/finetune.py (also `python -m mlx_clip.finetune`
and the `mlx-clip-finetune` console script)."""

import sys

from mlx_clip.finetune import main

if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Sample a catalogue's records and fetch their images into a clean manifest.

    python fetch.py records.json --sample 1566 --out data/
    python fetch.py records.json --margin 0.025 --stratify period

Run ``python fetch.py --help`` for every flag.
"""

import sys

from mlx_clip.fetch_cli import main

if __name__ == "__main__":
    sys.exit(main())

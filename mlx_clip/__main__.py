"""`python -m mlx_clip COMMAND [ARGS]`: every command of the package in one place.

`python -m mlx_clip` lists them; `python -m mlx_clip finetune --help` is `python finetune.py
--help` (and `mlx-clip-finetune --help`).
"""

from __future__ import annotations

import importlib
import sys

from . import __version__

# command -> (module under mlx_clip, what it does)
COMMANDS = {
    "fetch": ("fetch", "draw a sample of a records file and download its images"),
    "finetune": ("finetune", "fine-tune CLIP or SigLIP on records and their images"),
    "compare": ("compare", "compare runs on their shared held-out test set"),
    "curve": ("curve", "learning curve: how many images are enough"),
    "convert": ("convert", "convert a model between Hugging Face and MLX folders"),
    "index": ("index", "embed every record of a collection into an index file (llm's schema)"),
    "search": ("search", "search an index in a local page, or write the curator's CSVs"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: python -m mlx_clip COMMAND [ARGS]   (mlx-clip-finetune {__version__})", "", "commands:"]
    lines += [f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()]
    lines += ["", "python -m mlx_clip COMMAND --help shows a command's flags."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(f"mlx-clip-finetune {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r} (choose {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module = importlib.import_module(f".{COMMANDS[argv[0]][0]}", __package__)
    sys.argv[0] = f"python -m mlx_clip {argv[0]}"
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

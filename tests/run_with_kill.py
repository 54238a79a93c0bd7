"""A finetune run that SIGKILLs itself at an exact point, for the resume tests:

    python tests/run_with_kill.py POINT:N FINETUNE-FLAGS...

POINT:N is step:N (this process's Nth training step), checkpoint:N (in the middle of epoch N's
checkpoint write, after its weights file) or epoch:N (right after epoch N's checkpoint). The run
is the library's `run()` with a `Hooks` callback; nothing in the package reads a kill switch.

interrupt:N sends the process SIGINT (Ctrl-C) at its Nth training step instead, and runs the
whole `finetune.py` command (its exit code and one-line message), not `run()` alone: a Ctrl-C at
an exact step, however fast the machine trains.
"""

import functools
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mlx_clip  # noqa: E402,F401  (first: OpenBLAS under MLX on Linux)
from mlx_clip import finetune  # noqa: E402
from mlx_clip.run.loop import Hooks, run  # noqa: E402


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_hooks(point: str, n: int, stop=kill) -> Hooks:
    """Hooks that call `stop` (SIGKILL) at POINT number n."""
    steps = 0

    def on_step() -> None:
        nonlocal steps
        steps += 1
        if steps == n:
            stop()

    at_epoch = (lambda epoch: stop() if epoch == n else None)
    return Hooks(on_step=on_step if point == "step" else None,
                 on_checkpoint=at_epoch if point == "checkpoint" else None,
                 on_epoch=at_epoch if point == "epoch" else None)


def main() -> None:
    point, _, n = sys.argv[1].partition(":")
    if point not in ("step", "checkpoint", "epoch", "interrupt") or not n.isdigit():
        sys.exit(f"usage: run_with_kill.py step:N|checkpoint:N|epoch:N|interrupt:N FLAGS... (got {sys.argv[1]!r})")
    if point == "interrupt":
        hooks = kill_hooks("step", int(n), stop=lambda: os.kill(os.getpid(), signal.SIGINT))
        finetune.run = functools.partial(run, hooks=hooks)  # the command's own main, this run() inside
        sys.exit(finetune.main(sys.argv[2:]))
    args = finetune.build_parser().parse_args(sys.argv[2:])
    config = finetune.config_from_args(args)
    run(config, resume=args.resume, progress=config.fetch.progress,
        hooks=kill_hooks(point, int(n)))


if __name__ == "__main__":
    main()

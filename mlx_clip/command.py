"""The one command runner: every command's `main()` hands its work to :func:`run_command`, which
owns the exit codes and the one line a user sees when it stops.

    0    done
    1    failed (a file the system cannot read or write, for a reason other than the user's input)
    2    bad input: one line naming the file, record and field (InputError), or a full or
         read-only output folder
    130  interrupted (Ctrl-C), with one line saying what was kept

A bug is not the user's error: anything else keeps Python's traceback (and its exit code 1).

While a command runs, text its console cannot encode is printed escaped (`\xe9`, `\ud83d`)
instead of stopping it: a record's title may hold a lone surrogate (cut inside an emoji), and a
Windows or `LANG=C` console cannot show "é" at all.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from . import __version__
from .errors import InputError, error_line, write_error_line

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def add_version(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every command's `--version`."""
    parser.add_argument("--version", action="version", version=f"mlx-clip-finetune {__version__}")
    return parser


@contextmanager
def escaped_output() -> Iterator[None]:
    """stdout and stderr print what they cannot encode as backslash escapes (their old error
    handling comes back afterwards, for callers that run a command in-process)."""
    streams = [s for s in (sys.stdout, sys.stderr) if hasattr(s, "reconfigure")]
    before = [s.errors for s in streams]
    for stream in streams:
        stream.reconfigure(errors="backslashreplace")
    try:
        yield
    finally:
        for stream, errors in zip(streams, before):
            stream.reconfigure(errors=errors)


def run_command(work: Callable[[], object], *, interrupted: Callable[[], str] = lambda: "interrupted",
                again: Callable[[], str] = lambda: "run again") -> int:
    """Run `work()` and turn how it ended into an exit code and at most one line on stderr.

    `interrupted()` is the Ctrl-C line (what was kept); `again()` the hint after a full disk
    (how to continue). Both are called only then, so they may read what `work` got to."""
    with escaped_output():
        return _exit_code(work, interrupted, again)


def _exit_code(work: Callable[[], object], interrupted: Callable[[], str], again: Callable[[], str]) -> int:
    try:
        work()
    except InputError as err:
        if not getattr(err, "quiet", False):  # under mlx.launch, a failure all ranks share is said once
            print(error_line(err), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(interrupted(), file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as err:
        line = write_error_line(err, again())
        if line is not None:
            print(line, file=sys.stderr)
            return EXIT_BAD_INPUT
        print(error_line(err), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK

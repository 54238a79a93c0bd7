"""Counts in words: `counted(1, "epoch")` is "1 epoch", `counted(3, "epoch")` "3 epochs" (one
owner, so no line says "1 steps")."""

from __future__ import annotations


def millions(n: int) -> str:
    """A parameter count to three significant figures: 0.338M, 1.18M, 151M (the same precision for
    a model's total and its trained part, so 0.34M trained never reads as more than 0.3M in all)."""
    return f"{n / 1e6:.3g}M"


def counted(n: int, singular: str, plural: str | None = None, *, thousands: bool = False) -> str:
    """`n` with the singular or plural noun; `thousands` writes 1,906."""
    number = f"{n:,}" if thousands else str(n)
    return f"{number} {singular if n == 1 else (plural or singular + 's')}"

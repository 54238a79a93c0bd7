"""The model card's judging lines: the verdict sentence, retention and the WiSE-FT mix (from metrics.json)."""

from __future__ import annotations

from typing import Any, Mapping


def _number(value: Any) -> str:
    return f"{float(value):.3f}" if isinstance(value, (int, float)) else "–"


def judging_lines(metrics: Any) -> list[str]:
    """The run's verdict (the sentence report.html and the console show), what it kept of the base
    model, and the WiSE-FT mix the folder holds."""
    if not isinstance(metrics, Mapping):
        return []
    lines = []
    judged, kept, mix = metrics.get("verdict"), metrics.get("retention"), metrics.get("wise_ft")
    if isinstance(judged, Mapping) and judged.get("line"):
        where = "held-out test set" if judged.get("set") == "test" else "validation set"
        lines += [f"**Verdict ({where}):** {str(judged['line']).replace(chr(10), ' ')}", ""]
    if isinstance(kept, Mapping) and isinstance(kept.get("scores"), Mapping):
        for score in kept["scores"].values():
            if isinstance(score, Mapping) and (score.get("kept_percent") is not None or score.get("at_chance")):
                share = ("no share kept: the base is at chance" if score.get("at_chance")
                         else f"{float(score['kept_percent']):.0f} % kept")
                lines.append(f"- Retention, {score.get('measure')}: {_number(score.get('base'))} base → "
                             f"{_number(score.get('after'))} fine-tuned ({share}; {kept.get('set')})")
        lines += [f"- {kept[key]}" for key in ("note", "chance_note") if kept.get(key)]
        lines.append("")
    if isinstance(mix, Mapping) and mix.get("alpha") is not None:
        lines += [f"This model is a WiSE-FT mix: (1 − a) × base + a × fine-tuned with a = {float(mix['alpha']):g}, "
                  f"picked on validation by the rule {mix.get('why')}.", ""]
    return lines

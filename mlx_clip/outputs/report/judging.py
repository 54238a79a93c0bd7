"""The top of report.html: the verdict (from the held-out test set), what the model kept of the
base model's general skill, and the WiSE-FT trade-off, each read from metrics.json."""

from __future__ import annotations

from ...train.bootstrap import TOO_FEW, signed_text, too_few_text
from ...train.metric_names import MEAN_R1, ci_key
from ...train.wise_ft import retention_text
from ..run_paths import RunPaths
from .html import Raw, esc, img, png_file_uri, table, with_ci, words_class


def verdict_section(metrics: dict, warnings: list[str]) -> str:
    """The verdict sentence, then one line per area: red when it got worse, green when it helped,
    plain when the interval includes 0; the run's warnings below it."""
    judged = metrics.get("verdict")
    items = []
    for found in (judged or {}).get("findings", []):
        cls = "down" if found["regression"] else "up" if found.get("words") == "better" else ""
        if found["key"] == "retention":
            text = ("retention: not measurable (the base model scores at chance on the bundled emoji)"
                    if found.get("at_chance") else
                    f"retention: kept {found['kept_percent']:.0f} % of the base model's general skill")
            text += ("; worse: " + "; ".join(found["worse"])) if found["worse"] else ""
        elif found["words"] == TOO_FEW:
            text = f"{found['area']} ({found['measure']}): {too_few_text(found['change'], found['items'])}"
        else:
            text = f"{found['area']} ({found['measure']}): {signed_text(found['change'], found['ci95'])}, {found['words']}"
        items.append(f'<li class="{cls}">{"<strong>" if found["regression"] else ""}{esc(text, limit=None)}'
                     f'{"</strong>" if found["regression"] else ""}</li>')
    items += [f'<li class="down"><strong>{esc(w, limit=None)}</strong></li>' for w in warnings]
    if not judged and not items:
        return ""
    where = ("the held-out test set: not trained on and not used to pick the epoch" if (judged or {}).get("set") == "test"
             else "the validation set, which picked the epoch (optimistic; add --test-fraction for a held-out verdict)")
    line = f"<p class=verdict><strong>{esc(judged['line'], limit=None)}</strong></p>" if judged else ""
    return (f"<h2>Verdict</h2>{line}<p class=muted>From {esc(where, limit=None)}. Each change is after − before with a paired "
            "95 % bootstrap interval: above 0 is better, below 0 worse (red), an interval that includes 0 is not "
            "distinguishable from no change.</p><ul>" + "".join(items) + "</ul>")


def retention_section(metrics: dict) -> str:
    """Per general skill: base and fine-tuned scores, the share kept and the paired change."""
    kept = metrics.get("retention")
    if not kept or not kept.get("scores"):
        return ""
    rows = []
    for score in kept["scores"].values():
        cls = words_class(score["words"])
        rows.append((score["measure"], with_ci(score["base"], score.get(ci_key("base"))),
                     with_ci(score["after"], score.get(ci_key("after"))),
                     "not measurable (base at chance)" if score.get("at_chance") else
                     "–" if score["kept_percent"] is None else f"{score['kept_percent']:.0f} %",
                     Raw(f'<span class="{cls}">{esc(signed_text(score["change"], score[ci_key("change")]))} '
                         f'{esc(score["words"])}</span>')))
    note = "".join(f"<p><b>{esc(kept[key], limit=None)}</b></p>" for key in ("note", "chance_note") if kept.get(key))
    return (f"<h2>What it kept of the base model</h2><p class=muted>Out-of-domain material that ships with the "
            f"package: {esc(kept['set'])}. Kept = fine-tuned / base.</p>" + note
            + table(["skill", "base [95 % CI]", "fine-tuned [95 % CI]", "kept", "change [paired 95 % CI]"], rows,
                    numeric=(1, 2, 3, 4)))


def wise_ft_section(metrics: dict, paths: RunPaths) -> str:
    """Which WiSE-FT mix model/ holds and why, with the trade-off plot."""
    mix = metrics.get("wise_ft")
    if not mix:
        return ""
    uri = png_file_uri(paths.wise_ft_plot)
    rows = [(f"{p['alpha']:g}" + (" (kept)" if p["alpha"] == mix["alpha"] else ""),
             with_ci(p.get(MEAN_R1), p.get(ci_key(MEAN_R1))),
             retention_text(p, short=True).removeprefix("retention ")) for p in mix["points"]]
    return (f"<h2>WiSE-FT: the kept mix a = {mix['alpha']:g}</h2><p>model/ holds (1 − a) × base + a × fine-tuned "
            f"with a = {mix['alpha']:g}, picked on validation by the rule {esc(mix['why'], limit=None)}. The verdict and the test "
            "figures are this mix's.</p>"
            + (f"<div class=plots>{img(uri, 'WiSE-FT trade-off: gain against retention')}</div>" if uri else "")
            + table(["a", "validation mean recall@1 [95 % CI]", "retention"], rows, numeric=(1, 2)))

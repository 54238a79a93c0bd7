"""Every test the docs cite as proof (`tests/FILE.py::NAME`) exists, so a claim never points at a
test that was renamed or removed."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITED = re.compile(r"tests/(\w+\.py)::(\w+)")


def test_every_cited_test_exists():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
    missing = []
    for page in pages:
        for file, name in CITED.findall(page.read_text(encoding="utf-8")):
            source = ROOT / "tests" / file
            if not source.is_file() or not re.search(rf"^\s*(async\s+)?def {name}\b", source.read_text(encoding="utf-8"), re.M):
                missing.append(f"{page.relative_to(ROOT)}: tests/{file}::{name}")
    assert not missing, "\n".join(missing)

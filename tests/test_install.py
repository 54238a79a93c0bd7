"""The install route: pyproject's `dev` extra and requirements-dev.txt name the same test stack,
the code's licence is Apache-2.0, and setup.sh installs into a virtual environment."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _specs(lines):
    return sorted(s.replace(" ", "").replace("'", '"') for s in lines if s)


def test_the_dev_extra_and_requirements_dev_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements-dev.txt").read_text().splitlines()]
    assert "-r requirements.txt" in lines
    assert _specs(project["optional-dependencies"]["dev"]) == _specs(l for l in lines if not l.startswith("-r"))
    assert "torch==2.13.0" in project["optional-dependencies"]["dev"]  # the release the speed figures used


def test_the_code_is_apache_2_and_setup_uses_a_venv():
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0, January 2004" in (ROOT / "LICENSE").read_text()
    setup = (ROOT / "setup.sh").read_text()
    assert 'VENV=${VENV:-.venv}' in setup and "-m venv" in setup and "pip install -q -e '.[dev]'" in setup
    assert ". .venv/bin/activate" in (ROOT / ".ci" / "run").read_text()

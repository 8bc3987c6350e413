"""The runnable examples stay runnable (each at its small default size, well under 60 s)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "examples").glob("*.py"))
#: Extra command-line arguments per script (to keep CI small); default: none.
ARGS: dict[str, list[str]] = {
    "global_run.py": ["--resolution", "6"],
    "distributed_run.py": ["--resolution", "6"],
}
#: Extra marks per script.
MARKS = {"distributed_run.py": [pytest.mark.distributed, pytest.mark.slow]}


@pytest.mark.parametrize(
    "script",
    [pytest.param(p, id=p.name, marks=MARKS.get(p.name, [])) for p in SCRIPTS],
)
def test_example_runs(script, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", [str(script), *ARGS.get(script.name, [])])
    monkeypatch.chdir(tmp_path)  # anything an example writes by default stays out of the repo
    runpy.run_path(str(script), run_name="__main__")
    assert capsys.readouterr().out.strip()


def test_every_example_is_documented():
    readme = (ROOT / "examples" / "README.md").read_text()
    missing = [p.name for p in SCRIPTS if p.name not in readme]
    assert not missing, f"examples/README.md does not describe {missing}"

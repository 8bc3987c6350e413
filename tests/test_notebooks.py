"""The notebook gallery (``docs/notebooks``) runs headless, cleanly, with one progress widget
per long step.

Each notebook is executed with nbclient in a fresh kernel (as CI runs it): no cell may raise
or write to stderr (warnings included), and every cell that writes a store shows its
progress as a single widget (``tqdm.auto`` with ipywidgets), not as repeated text blocks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "docs" / "notebooks").glob(
    "*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"


def test_the_gallery_exists():
    assert len(NOTEBOOKS) >= 4, NOTEBOOKS


#: notebooks that read ../shared/data (the real profiles), skipped without it
SHARED = {"04_real_profiles"}
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_cleanly(path, tmp_path):
    if path.stem in SHARED and not (SHARED_DATA / "profiles").is_dir():
        pytest.skip("../shared/data absent")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on an error
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code)
    for c in code:
        stderr = [o.text for o in c.outputs if o.output_type == "stream" and o.name == "stderr"]
        assert not stderr, (c.source, stderr)
        if "write_zarr(" in c.source and "progress=False" not in c.source:
            widgets = [o for o in c.outputs if WIDGET in o.get("data", {})]
            assert len(widgets) == 1, (c.source, [o.get("data", {}).keys() for o in c.outputs])
    # the stored outputs (rendered by the docs) are those of the same cells, run
    stored = nbformat.read(path, as_version=4)
    assert [c.source for c in stored.cells] == [c.source for c in nb.cells]
    for old, new in zip(stored.cells, nb.cells):
        if old.cell_type == "code":
            kinds = [[o.output_type, sorted(o.get("data", {}))] for o in new.outputs]
            assert [[o.output_type, sorted(o.get("data", {}))] for o in old.outputs] == kinds, \
                (old.source, "rerun examples/build_notebooks.py --execute")

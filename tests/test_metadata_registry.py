"""Metadata comes from one registry (xproda.conventions) and sits on the right variables.

Checks, on the synthetic world, a steady state, the analyses, the samplers and the demo's
Zarr stores: cf-xarray's ``standard_names`` lookup returns exactly the expected variables,
every data variable xproda creates has ``units`` (read by :func:`xproda.units.parse_units`)
and ``long_name``, and attributes of an input never leak onto a computed variable.  A scan of
the source checks that no module outside the registry writes ``units``/``long_name``/
``standard_name``/``cell_methods`` literals (listed exceptions aside).
"""

from __future__ import annotations

import ast
from pathlib import Path

import cf_xarray  # noqa: F401  (registers the .cf accessor)
import numpy as np
import pytest
import torch

import xproda
from xproda import analysis, conventions, io
from xproda.sites.assimilation.samplers import adaptive_metropolis, map_estimate, reference_sampler
from xproda.climate import CLIMATE_VARIABLES, FORCING_VARIABLES
from xproda.datasets import COVARIATES, synthetic_world, truth_parameters
from xproda.demo import STOCK_VARIABLES, run_demo
from xproda.models.forcing import FORCING_SCHEMA
from xproda.units import parse_units

RESOLUTION = 30.0  # the coarsest world: 6 x 12 cells, 14 soil columns

#: CF standard names used by xproda (each looked up in the CF standard-name table by hand;
#: a new one needs the same look-up before it is added here)
CF_STANDARD_NAMES = {
    "air_temperature", "cell_area", "depth", "land_area_fraction", "latitude", "longitude",
    "lwe_precipitation_rate", "lwe_thickness_of_precipitation_amount",
    "net_primary_productivity_of_biomass_expressed_as_carbon", "soil_mass_content_of_carbon",
    "soil_temperature", "surface_altitude", "time",
}
#: grid coordinates: when cf-xarray finds them, they must be these variables
GRID_NAMES = {"latitude": ["lat"], "longitude": ["lon"], "depth": ["depth"],
              "cell_area": ["cell_area"]}
STOCK = "soil_mass_content_of_carbon"
#: the synthetic world (forcing, covariates, climate, land fraction) beside the grid
WORLD_NAMES = {
    "air_temperature": ["bio1", "bio10", "bio11", "bio5", "bio6", "bio8", "bio9", "tas"],
    "lwe_thickness_of_precipitation_amount": [
        "bio12", "bio13", "bio14", "bio16", "bio17", "bio18", "bio19"],
    "lwe_precipitation_rate": ["pr"],
    "surface_altitude": ["elevation"],
    "land_area_fraction": ["landfrac"],
    "soil_temperature": ["TSOI"],
    "net_primary_productivity_of_biomass_expressed_as_carbon": ["NPP"],
}
#: example values of every template field of the registry
FIELDS = {"depth": "0-1 m", "metric": "r2", "metric_units": "1", "label": "soc_stock",
          "method": "two_step", "stat": "r2", "estimate": "map"}


# -------------------------------------------------------------------------------------------
# helpers
# -------------------------------------------------------------------------------------------
def assert_standard_names(ds, expected):
    """cf-xarray's lookup is ``expected`` plus the grid coordinates it finds."""
    found = {k: sorted(v) for k, v in ds.cf.standard_names.items()}
    grid = {k: v for k, v in GRID_NAMES.items() if k in found}
    assert found == {**grid, **{k: sorted(v) for k, v in expected.items()}}


def assert_described(ds, *, mixed_units=()):
    """Every data variable: long_name; units readable (flag variables and ``mixed_units``
    excepted: CF needs no units on flags, and those have several along a dim)."""
    for name, v in ds.data_vars.items():
        assert v.attrs.get("long_name"), name
        if "flag_meanings" in v.attrs or name in mixed_units:
            continue
        assert "units" in v.attrs, name
        parse_units(v.attrs["units"], name=str(name))


def assert_from_registry(ds, section, *, fields=None, names=None):
    """The attrs of the variables are exactly the registry's (nothing leaked)."""
    for name in ds.data_vars if names is None else names:
        # flag_values are stored in their variable's type (conventions.cf_finalize)
        got = {k: (v.tolist() if isinstance(v, np.ndarray) else v)
               for k, v in ds[name].attrs.items()}
        assert got == conventions.attrs(str(name), section=section, fields=fields), name


def _registry_entries():
    for section, table in {**conventions.SECTIONS, "forcing": FORCING_SCHEMA}.items():
        for name in table:
            yield section, name, conventions.attrs(name, section=section, fields=FIELDS)


# -------------------------------------------------------------------------------------------
# fixtures
# -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world():
    return synthetic_world(RESOLUTION)


@pytest.fixture(scope="module")
def theta(world):
    return truth_parameters(world, kind="cue").compute()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_metadata")
    run_demo(out, resolution=RESOLUTION, n_sites=20, epochs=1, seed=1, progress=False,
             figures=False)
    return out


# -------------------------------------------------------------------------------------------
# the registry itself
# -------------------------------------------------------------------------------------------
def test_every_registered_units_string_parses_and_standard_names_are_cf():
    n = 0
    for section, name, a in _registry_entries():
        if "units" in a:
            parse_units(a["units"], name=f"{section}.{name}")
        if "standard_name" in a:
            assert a["standard_name"] in CF_STANDARD_NAMES, (section, name)
        # time means exist only in the monthly climate; none elsewhere (no leaked ones)
        assert "cell_methods" not in a or section == "climate", (section, name)
        n += 1
    assert n > 150


def test_lookup_errors_name_the_known_variables_and_sections():
    with pytest.raises(KeyError, match=r"'NPP' in section 'outputs'.*'soc_stock'.*"
                                       r"registered in section\(s\) \['forcing', 'indices'\]"):
        conventions.attrs("NPP")
    with pytest.raises(KeyError, match="no metadata section 'nope'; known: .*'forcing'"):
        conventions.attrs("soc", section="nope")
    with pytest.raises(KeyError, match=r"needs fields=\{'depth'"):
        conventions.attrs("global_stock", section="sensitivity")
    a = conventions.attrs("score", section="importance",
                          fields={"metric": "rmse", "metric_units": "g m-3"})
    assert a == {"units": "g m-3", "long_name": "rmse with the group scrambled"}
    # a fresh dict each time: callers cannot change the registry
    conventions.attrs("landmask", section="world")["flag_values"].append(2)
    assert conventions.WORLD["landmask"]["flag_values"] == [0, 1]


def test_forcing_attrs_come_from_the_kernel_schema():
    for name, v in FORCING_SCHEMA.items():
        a = conventions.forcing_attrs(name)
        assert (a["units"], a["long_name"]) == (v.units, v.long_name)
        assert a.get("standard_name") == conventions.FORCING_STANDARD_NAMES.get(name)
    assert conventions.forcing_attrs("TSOI")["standard_name"] == "soil_temperature"
    assert "standard_name" not in conventions.forcing_attrs("W_SCALAR")


def test_annotate_replaces_instead_of_merging(world):
    # arithmetic keeps the attrs of tas (xarray >= 2025.11): annotate must drop them
    da = (world["tas"] * 2.0).rename("W_SCALAR")
    out = conventions.annotate(da, "forcing")
    assert dict(out.attrs) == conventions.forcing_attrs("W_SCALAR")
    assert world["tas"].attrs.get("standard_name") == "air_temperature"  # input untouched


# -------------------------------------------------------------------------------------------
# synthetic world and steady state
# -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunks", [None, 3])
def test_synthetic_world_standard_names_and_attrs(chunks):
    w = synthetic_world(RESOLUTION, chunks=chunks)
    assert_standard_names(w, WORLD_NAMES)
    assert_described(w)
    assert_from_registry(w, "forcing", names=FORCING_VARIABLES)
    assert_from_registry(w, "covariates", names=COVARIATES)
    assert_from_registry(w, "world", names=["landfrac", "landmask"])
    for name in ("lat", "lon", "lat_bnds", "lon_bnds", "month", "layer", "depth",
                 "depth_bounds"):
        assert dict(w[name].attrs) == conventions.attrs(name, section="coordinates"), name
    # only the monthly climate (xproda.climate) carries cell_methods
    assert {k for k, v in w.data_vars.items() if "cell_methods" in v.attrs} <= set(
        CLIMATE_VARIABLES)


def test_steady_state_outputs(world, theta):
    out = world.proda.steady_state(theta)
    assert_standard_names(out, {STOCK: ["soc_stock"]})
    assert_described(out)
    for name in out.data_vars:
        ref = conventions.attrs(str(name))
        assert {k: out[name].attrs[k] for k in ref} == ref, name


# -------------------------------------------------------------------------------------------
# analyses
# -------------------------------------------------------------------------------------------
def test_bulk_indices(world, theta):
    out = analysis.bulk_indices(world, theta)
    assert_standard_names(out, {})
    assert_described(out)
    assert_from_registry(out, "indices")


def test_sensitivities(world, theta):
    depth = {"depth": "0-8.6 m"}
    fin = analysis.sensitivity(world, theta, groups=["A", "NPP"], levels=[0.01])
    assert_standard_names(fin, {STOCK: ["soc_stock"]})
    assert_described(fin)
    assert_from_registry(fin, "sensitivity", fields=depth)
    assert dict(fin["level"].attrs) == conventions.attrs("level", section="sensitivity")
    assert fin["group"].attrs["long_name"] == "process group" and fin["group"].attrs["members"]
    grad = analysis.sensitivity_gradient(world, theta, groups=["A"])
    assert_standard_names(grad, {STOCK: ["soc_stock"]})
    assert_described(grad)
    assert_from_registry(grad, "sensitivity_gradient", fields=depth)
    cmp_ = analysis.compare_sensitivities(world, theta, groups=["A"], delta=0.01)
    assert_standard_names(cmp_, {})
    assert_described(cmp_)
    assert_from_registry(cmp_, "compare_sensitivities")


def test_component_control(world, theta):
    out = analysis.component_control(world, theta, groups=["A", "NPP"])
    assert_standard_names(out, {STOCK: ["soc_stock", "soc_stock_full"]})
    assert_described(out)
    assert_from_registry(out, "control", fields={"depth": "0-1 m"})


def test_skill_by_group_describes_its_columns():
    rng = np.random.default_rng(0)
    obs = rng.uniform(1e3, 2e4, (6, 3))
    df = analysis.skill_by_group(obs * 1.1, obs, depth=np.tile([0.1, 0.5, 1.5], (6, 1)))
    assert set(df.attrs["metrics"]) == set(df.columns)
    for name, a in df.attrs["metrics"].items():
        assert a == conventions.attrs(name, section="skill")
        parse_units(a["units"], name=name)
    assert df.attrs["metrics"]["rmse"]["units"] == "g m-3"


# -------------------------------------------------------------------------------------------
# samplers
# -------------------------------------------------------------------------------------------
def test_sampler_and_map_results():
    S, P = 2, 2
    target = torch.tensor([[0.3, 0.6], [0.5, 0.4]], dtype=torch.float64)

    def log_density(th):
        return -0.5 * (((th - target.repeat_interleave(th.shape[0] // S, 0)) / 0.1) ** 2).sum(-1)

    def cost(th):
        m = torch.stack([th[:, 0], th[:, 1], th.sum(1)], 1)
        return -log_density(th), m

    obs = torch.cat([target, target.sum(1, keepdim=True)], 1)
    results = [
        adaptive_metropolis(log_density, n_sites=S, n_params=P, n_iter=200, progress=False),
        reference_sampler(cost, n_sites=S, n_params=P, nsimu1=40, nsimu2=60, adapt_start=20,
                          min_accept=0, rate_bounds=(0.0, 1.0), obs=obs, gev_mode=True,
                          progress=False),
        map_estimate(lambda th: -log_density(th), n_sites=S, n_params=P, steps=20,
                     progress=False),
    ]
    for res in results:
        ds = res.to_dataset(param_names=["a", "b"])
        assert_standard_names(ds, {})
        assert_described(ds, mixed_units=("stat",))
        assert_from_registry(ds, "assimilation")
        assert dict(ds["parameter"].attrs) == conventions.attrs("parameter",
                                                                section="assimilation")
    assert {"stat", "soc_mod_opt", "para_es", "gelman_rubin"} <= set(
        results[1].to_dataset().data_vars)


# -------------------------------------------------------------------------------------------
# demo stores
# -------------------------------------------------------------------------------------------
def test_demo_world_store(demo):
    w = io.open_dataset(str(demo / "world.zarr"))
    assert_standard_names(w, WORLD_NAMES)
    assert_described(w)
    assert_from_registry(w, "forcing", names=FORCING_VARIABLES)
    assert_from_registry(w, "covariates", names=COVARIATES)


def test_demo_results_store(demo):
    res = io.open_dataset(str(demo / "results.zarr"))
    assert_standard_names(res, {STOCK: sorted(STOCK_VARIABLES.values())})
    assert_described(res)
    a = conventions.attrs("theta_truth", section="demo")
    assert {k: res["theta_truth"].attrs[k] for k in a} == a
    assert res["theta_truth"].attrs["description"].startswith("xproda.datasets.truth_par")
    assert res["theta"].attrs["long_name"] == conventions.attrs("theta")["long_name"]


# -------------------------------------------------------------------------------------------
# the registry is the only source
# -------------------------------------------------------------------------------------------
PACKAGE = Path(xproda.__file__).parent
#: attribute names only the registry writes
METADATA_KEYS = {"units", "long_name", "standard_name", "cell_methods"}
#: modules that may write them anyway (the registry, the kernel schema) ...
REGISTRY = {"conventions.py", "models/forcing.py"}
#: ... and modules not migrated to the registry yet, each with the reason
EXCEPTIONS = {
    "units.py": "unit conversion rewrites the units of the variable it converts (by design)",
    "demo.py": "figure labels on temporary DataArrays handed to xproda.plotting, never stored",
    "testing.py": "test fixtures: forcing and grid of xproda.testing.forcing_dataset",
    "sites/observations/schema.py": "PROFILE_COLUMNS documents the columns of input tables "
                                    "(read, not created)",
}


def _metadata_writes(source: str) -> list[int]:
    """Lines that write metadata literally: a dict literal with one of METADATA_KEYS as a
    key, ``assign_attrs``/``dict``/``update``/``attrs`` called with one of them as a
    keyword, or ``<x>.attrs["units"] = ...``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict):
            hit = any(isinstance(k, ast.Constant) and k.value in METADATA_KEYS
                      for k in node.keys)
        elif isinstance(node, ast.Call):
            f = node.func
            fname = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            hit = (fname in ("assign_attrs", "dict", "update", "attrs")
                   and any(kw.arg in METADATA_KEYS for kw in node.keywords))
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            hit = any(isinstance(t, ast.Subscript) and isinstance(t.value, ast.Attribute)
                      and t.value.attr == "attrs" and isinstance(t.slice, ast.Constant)
                      and t.slice.value in METADATA_KEYS for t in targets)
        else:
            hit = False
        if hit:
            lines.append(node.lineno)
    return sorted(lines)


def test_the_scan_finds_literal_metadata():
    src = ('a = {"units": "m"}\nb = x.assign_attrs(long_name="y")\nx.attrs["units"] = "1"\n'
           'c = conventions.attrs("soc")\nd = {"title": "t"}\nplot(da, units="kg m-2")\n')
    assert _metadata_writes(src) == [1, 2, 3]


def test_only_the_registry_writes_metadata():
    bad = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in REGISTRY or rel in EXCEPTIONS:
            continue
        lines = _metadata_writes(path.read_text(encoding="utf-8"))
        if lines:
            bad[rel] = lines
    assert not bad, (f"literal units/long_name/standard_name/cell_methods outside "
                     f"xproda.conventions (file: lines): {bad}; register them and use "
                     "conventions.attrs()/annotate()")
    assert all(EXCEPTIONS.values())  # every exception says why

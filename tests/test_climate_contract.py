"""The input contract of xproda.climate (CLIMATE_SCHEMA): units, dims, ranges, metadata.

Bad inputs must fail loudly (an exact error type, a message naming the variable), inputs in
other units with a correct ``units`` attribute must give the forcing of canonical inputs, and
lazy inputs must stay lazy until computed (where the range errors then surface).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from xproda import conventions
from xproda.climate import CLIMATE_SCHEMA, FORCING_VARIABLES, from_climate
from xproda.errors import DimensionError, GridError, InputError, RangeError, UnitsError
from xproda.testing import raise_if_dask_computes
from xproda.units import DAYS_IN_MONTH_NOLEAP, conversion, parse_units

DOCS = Path(__file__).resolve().parents[1] / "docs" / "user-guide" / "forcing-from-climate.md"
MONTH = np.arange(1, 13)
LAT = [45.0, -30.0, 65.0]
DAYS = xr.DataArray(DAYS_IN_MONTH_NOLEAP, dims="month")
#: common fill values: netCDF default, GDAL/ArcGIS float32 minimum, -9999, int16 extremes
FILLS = [1e36, -1e36, 9.969209968386869e36, -3.4028234663852886e38, -9999.0, -32768.0,
         32767.0, 65535.0]


# ------------------------------------------------------------------------------ inputs
def _monthly() -> xr.Dataset:
    """Monthly climate of 3 sites in canonical units (degC, mm month-1)."""
    peak = np.where(np.asarray(LAT) >= 0, 7.0, 1.0)
    cos = np.cos(2 * np.pi * (MONTH[:, None] - peak[None, :]) / 12.0)
    tas = np.array([11.0, 17.0, -4.0]) + np.array([9.0, 5.0, 16.0]) * cos
    pr = np.array([900.0, 400.0, 350.0]) / 12.0 * (1.0 + np.array([0.3, -0.5, 0.6]) * cos)
    return xr.Dataset({"tas": (("month", "site"), tas, {"units": "degC"}),
                       "pr": (("month", "site"), pr, {"units": "mm month-1"})},
                      coords={"lat": ("site", LAT)})


def _soil() -> xr.Dataset:
    """Column variables in canonical units (bedrock depths away from layer interfaces)."""
    def var(values, units):
        return ("site", np.asarray(values, dtype=np.float64), {"units": units})

    return xr.Dataset({
        "depth_to_bedrock": var([0.55, 2.7, 12.0], "m"),
        "sand": var([20.0, 45.0, 70.0], "%"),
        "elevation": var([150.0, 900.0, 40.0], "m"),
        "npp": var([650.0, 300.0, 120.0], "g C m-2 yr-1"),
        "tree_fraction": var([0.8, 0.2, 0.5], "1"),
        "fpi": var([0.6, 0.7, 0.4], "1"),
    })


def _sites() -> xr.Dataset:
    return xr.Dataset({"maat": ("site", [11.0, 17.0, -4.0], {"units": "degC"}),
                       "map": ("site", [900.0, 400.0, 350.0], {"units": "mm"})},
                      coords={"lat": ("site", LAT)})


def _bio() -> xr.Dataset:
    return xr.Dataset({"bio1": ("site", [11.0, 17.0, -4.0]), "bio4": ("site", [650., 350., 1100.]),
                       "bio12": ("site", [900.0, 400.0, 350.0]),
                       "bio15": ("site", [20.0, 40.0, 50.0])}, coords={"lat": ("site", LAT)})


#: where each input lives: (base climate, soil or None) builders
_BASES = {
    "monthly": (_monthly, _soil),
    "sites": (_sites, _soil),
    "bio": (_bio, _soil),
}
_HOME = {**dict.fromkeys(("tas", "pr", *_soil().data_vars), "monthly"),
         "maat": "sites", "map": "sites", **dict.fromkeys(_bio().data_vars, "bio")}


def _inputs(name: str) -> tuple[xr.Dataset, xr.Dataset]:
    climate, soil = _BASES[_HOME[name]]
    return climate(), soil()


def _run(name: str, da: xr.DataArray | None = None, **kw) -> xr.Dataset:
    """Forcing with input ``name`` replaced by ``da`` (in its own Dataset, climate or soil)."""
    climate, soil = _inputs(name)
    if da is not None:
        target = climate if name in climate else soil
        target[name] = da
    return from_climate(climate, soil=soil, **kw)


def _with(name: str, values=None, *, units=..., attrs=None) -> xr.DataArray:
    """Input ``name`` of its base with new values, units attribute (None: none) or attrs."""
    climate, soil = _inputs(name)
    da = (climate if name in climate else soil)[name]
    if values is not None:
        da = da.copy(data=np.broadcast_to(values, da.shape).astype(np.float64))
    da.attrs = dict(da.attrs) if attrs is None else dict(attrs)
    if units is None:
        da.attrs.pop("units", None)
    elif units is not ...:
        da.attrs["units"] = units
    return da


def _reference(name: str) -> xr.Dataset:
    return _run(name)


def assert_same_forcing(a: xr.Dataset, b: xr.Dataset, rtol: float = 1e-12) -> None:
    """Equal forcing: float64 variables to ``rtol``, float32 ones to 2 float32 ulp."""
    for k in FORCING_VARIABLES:
        x, y = a[k].transpose(*b[k].dims).values, b[k].values
        tol = rtol if x.dtype == np.float64 else max(rtol, 2 * np.finfo(np.float32).eps)
        np.testing.assert_allclose(x, y, rtol=tol, atol=0, equal_nan=True, err_msg=k)


# ------------------------------------------------------------------------------ the schema
def test_schema_is_complete_and_parseable():
    policies = {"required", "default", "definition"}
    for name, spec in CLIMATE_SCHEMA.items():
        assert spec.name == name
        assert spec.minimum < spec.maximum and np.isfinite([spec.minimum, spec.maximum]).all()
        assert spec.units_attr in policies and spec.units_note and spec.range_source, name
        if spec.units_attr != "definition":
            parse_units(spec.units, name=name)  # canonical units are UDUNITS strings
        # every fill value of common use is out of range: none can pass as data
        assert all(not spec.minimum <= f <= spec.maximum for f in FILLS), name
    required = {k for k, v in CLIMATE_SCHEMA.items() if v.units_attr == "required"}
    assert required == {"pr", "map", "depth_to_bedrock", "npp", "npp_annual"}


def test_docs_contract_table_matches_the_schema():
    rows = [r for r in DOCS.read_text().splitlines()
            if r.startswith("| `") and len(r.split("|")) == 8]

    def number(x: float) -> str:
        return f"{x:,.0f}".replace("-", "\N{MINUS SIGN}") if x == int(x) else f"{x:g}"

    for name, spec in CLIMATE_SCHEMA.items():
        row = [r for r in rows if f"`{name}`" in r.split("|")[1]]
        assert len(row) == 1, name
        assert f"| {number(spec.minimum)} … {number(spec.maximum)} |" in row[0], name
        assert ("**required**" in row[0]) == (spec.units_attr == "required"), name
        assert ("not read" in row[0]) == (spec.units_attr == "definition"), name


_ACCEPTED = [(name, re.sub(r"\s*\(.*?\)", "", u).strip())
             for name, spec in CLIMATE_SCHEMA.items() if spec.units_attr != "definition"
             and name in _HOME for u in spec.accepted.split(",")]


@pytest.mark.parametrize(("name", "units"), _ACCEPTED)
def test_every_documented_unit_is_converted(name, units):
    # NaN values: only the units are exercised (a conversion, no unit error)
    out = _run(name, _with(name, np.nan, units=units))
    assert f"{name}: converted from {units!r}" in out.attrs["history"]


# ------------------------------------------------------------------------------ good inputs
_D = DAYS_IN_MONTH_NOLEAP[:, None]
#: (variable, units, factor): the canonical values times ``factor`` are in ``units``
CONVERTED = [
    ("pr", "kg m-2 s-1", 1.0 / (_D * 86400.0)),  # a monthly mean rate: seconds of that month
    ("pr", "mm s-1", 1.0 / (_D * 86400.0)),
    ("pr", "mm d-1", 1.0 / _D),
    ("pr", "mm/day", 1.0 / _D),
    ("pr", "m/month", 1e-3),
    ("pr", "cm month-1", 0.1),
    ("pr", "kg m-2 month-1", 1.0),  # water density 1000 kg m-3
    ("pr", "kg m-2", 1.0),  # the total of each month
    ("pr", "mm", 1.0),
    ("map", "cm", 0.1),
    ("map", "m", 1e-3),
    ("map", "mm yr-1", 1.0),
    ("map", "kg m-2", 1.0),
    ("map", "inch", 1.0 / 25.4),
    ("map", "mm d-1", 1.0 / 365.0),  # a 365-day year
    ("depth_to_bedrock", "cm", 100.0),
    ("depth_to_bedrock", "mm", 1000.0),
    ("depth_to_bedrock", "ft", 1.0 / 0.3048),
    ("npp", "kg C m-2 yr-1", 1e-3),
    ("npp", "g C m-2 s-1", 1.0 / (365.0 * 86400.0)),  # a 365-day year, as CLM
    ("npp", "kg C m-2 s-1", 1e-3 / (365.0 * 86400.0)),
    ("npp", "g C m-2 d-1", 1.0 / 365.0),
    ("npp", "g C m-2 month-1", 1.0 / 12.0),
    ("npp", "t ha-1 yr-1", 1e-2),
    ("sand", "1", 0.01),
    ("sand", "g kg-1", 10.0),
    ("tree_fraction", "%", 100.0),
    ("elevation", "km", 1e-3),
    ("bio12", "cm", 0.1),
]


@pytest.mark.parametrize(("name", "units", "factor"), CONVERTED,
                         ids=[f"{n}-{u}" for n, u, _ in CONVERTED])
def test_units_converted_give_the_canonical_forcing(name, units, factor):
    ref = _reference(name)
    canonical = _with(name)
    out = _run(name, (canonical * factor).assign_attrs(units=units))
    assert_same_forcing(out, ref)
    lines = out.attrs["history"].splitlines()
    assert sum(f"{name}: converted from {units!r}" in line for line in lines) == 1


@pytest.mark.parametrize(("name", "units"), [("npp", "gC/m2/yr"), ("pr", "mm/month"),
                                             ("tas", "Celsius"), ("sand", "percent")])
def test_other_spellings_of_the_canonical_units_are_no_conversion(name, units):
    out = _run(name, _with(name, units=units))
    assert_same_forcing(out, _reference(name), rtol=0)
    assert "converted" not in out.attrs["history"]


@pytest.mark.parametrize(("units", "to_units"), [
    ("K", lambda t: t + 273.15),
    ("degF", lambda t: t * 9.0 / 5.0 + 32.0),
    ("degC", lambda t: t),
])
def test_temperature_units(units, to_units):
    ref = _reference("tas")
    tas = _with("tas")
    out = _run("tas", to_units(tas).assign_attrs(units=units))
    assert_same_forcing(out, ref, rtol=1e-9)  # offsets: not bit-exact in float64
    assert ("tas: converted" in out.attrs["history"]) == (units != "degC")


def test_undecoded_fill_value_attribute_is_missing_data():
    values = np.array([900.0, -9999.0, 350.0])
    out = _run("map", _with("map", values, attrs={"units": "mm", "_FillValue": -9999.0}))
    nan = _run("map", _with("map", [900.0, np.nan, 350.0]))
    assert_same_forcing(out, nan)
    assert np.isnan(out["TSOI"].isel(site=1)).all() and np.isfinite(out["TSOI"]).sum() > 0
    assert "map: values equal to its _FillValue -9999 read as missing" in out.attrs["history"]
    # missing_value (a list of them) too
    mv = _with("map", values, attrs={"units": "mm", "missing_value": [-9999.0, -1.0]})
    assert_same_forcing(_run("map", mv), nan)


def test_one_history_line_per_conversion_and_no_attribute_leaks():
    climate, soil = _monthly(), _soil()
    climate["tas"] = (climate["tas"] + 273.15).assign_attrs(units="K", long_name="LEAK",
                                                             comment="LEAK")
    climate["pr"] = (climate["pr"] / DAYS).assign_attrs(units="mm d-1", standard_name="LEAK")
    soil["depth_to_bedrock"] = (soil["depth_to_bedrock"] * 100).assign_attrs(units="cm")
    out = from_climate(climate, soil=soil, include_climate=True)
    conv = [line for line in out.attrs["history"].splitlines() if "converted from" in line]
    assert [line.split("from_climate: ")[1].split(":")[0] for line in conv] == [
        "tas", "pr", "depth_to_bedrock"]
    for k in ("tas", "pr", "pet"):
        assert out[k].attrs == conventions.attrs(k, section="climate"), k
    for k in FORCING_VARIABLES:
        assert {a: out[k].attrs[a] for a in out[k].attrs if a != "comment"} == \
            conventions.forcing_attrs(k), k
    assert "LEAK" not in repr(out.attrs) + repr({k: v.attrs for k, v in out.variables.items()})
    assert out["month"].attrs == conventions.attrs("month", section="coordinates")


def test_cf_standard_names_fit_the_units():
    # standard_name only where CF's canonical units convert to the variable's units
    canonical = {"air_temperature": "K", "lwe_precipitation_rate": "m s-1",
                 "soil_temperature": "K",
                 "net_primary_productivity_of_biomass_expressed_as_carbon": "kg m-2 s-1"}
    out = _run("tas", include_climate=True)
    for k in ("tas", "pr", "pet", *FORCING_VARIABLES):
        std = out[k].attrs.get("standard_name")
        if std is not None:
            conversion(out[k].attrs["units"], canonical[std], name=k)
    assert "standard_name" not in out["pet"].attrs


# ------------------------------------------------------------------------------ bad inputs
def _monthly_ds(**variables) -> xr.Dataset:
    ds = _monthly()
    for k, v in variables.items():
        ds[k] = v
    return ds


#: (id, climate/soil variable, replacement DataArray, error type, match)
BAD = [
    # units missing where required
    ("pr-no-units", "pr", _with("pr", units=None), UnitsError, r"^pr: no units attribute"),
    ("map-no-units", "map", _with("map", units=None), UnitsError, r"^map: no units attribute"),
    ("bedrock-no-units", "depth_to_bedrock", _with("depth_to_bedrock", units=None),
     UnitsError, r"^depth_to_bedrock: no units attribute"),
    ("npp-no-units", "npp", _with("npp", units=None), UnitsError, r"^npp: no units attribute"),
    # unreadable units
    ("pr-unparsable", "pr", _with("pr", units="bananas"), UnitsError,
     r"^pr: cannot read units 'bananas'.*'mm month-1'"),
    ("tas-unparsable", "tas", _with("tas", units="degrees Kelvinish"), UnitsError, r"^tas: "),
    ("npp-unparsable", "npp", _with("npp", units="g C m-2 per annum"), UnitsError, r"^npp: "),
    ("sand-unparsable", "sand", _with("sand", units="percent by mass"), UnitsError,
     r"^sand: "),
    # units of another dimension
    ("pr-temperature", "pr", _with("pr", units="degC"), UnitsError,
     r"^pr: units 'degC' .*cannot be converted to 'mm month-1'"),
    ("tas-length", "tas", _with("tas", units="mm"), UnitsError, r"^tas: units 'mm'"),
    ("npp-depth-rate", "npp", _with("npp", units="mm d-1"), UnitsError, r"^npp: units 'mm d-1'"),
    ("bedrock-mass", "depth_to_bedrock", _with("depth_to_bedrock", units="kg"), UnitsError,
     r"^depth_to_bedrock: units 'kg'.*expected in 'm'"),
    ("sand-length", "sand", _with("sand", units="m"), UnitsError, r"^sand: units 'm'"),
    ("map-temperature", "map", _with("map", units="K"), UnitsError, r"^map: units 'K'"),
    ("elevation-asl", "elevation", _with("elevation", units="m a.s.l."), UnitsError,
     r"^elevation: units 'm a.s.l.'"),
    ("fraction-length", "tree_fraction", _with("tree_fraction", units="m"), UnitsError,
     r"^tree_fraction: "),
    # mislabelled units and unit mistakes the range catches
    ("npp-mislabelled", "npp", _with("npp", units="kg C m-2 yr-1"), RangeError,
     (r"^npp: values up to 6\.5e\+05 g C m-2 yr-1 outside the plausible range \[0, 5000\]"
      r".*'kg C m-2 yr-1'")),
    ("pr-mislabelled", "pr", _with("pr", units="m month-1"), RangeError,
     r"^pr: values up to .* mm month-1 outside the plausible range \[0, 5000\]"),
    ("bedrock-cm-as-m", "depth_to_bedrock", _with("depth_to_bedrock", [55.0, 270.0, 1200.0]),
     RangeError, r"^depth_to_bedrock: values up to 1200 m outside .* \[0, 1000\] m"),
    ("tas-kelvin-unlabelled", "tas", _with("tas", _with("tas").values + 273.15, units=None),
     RangeError,
     r"^tas: values up to .* degC .*no units attribute, so degC assumed.*units='K'"),
    ("sand-g-per-kg-unlabelled", "sand", _with("sand", [200.0, 450.0, 700.0], units=None),
     RangeError, r"^sand: values up to 700 % outside the plausible range \[0, 100\] %"),
    ("tree-percent-unlabelled", "tree_fraction", _with("tree_fraction", [80.0, 20.0, 50.0],
                                                       units=None),
     RangeError, r"^tree_fraction: values up to 80 1 "),
    ("elevation-feet-unlabelled", "elevation", _with("elevation", [150.0, 29000.0, 40.0],
                                                     units=None),
     RangeError, r"^elevation: values up to 2\.9e\+04 m"),
    ("pr-negative", "pr", _with("pr") - 100.0, RangeError, r"^pr: values down to -"),
    ("bio4-x10", "bio4", _with("bio4", [6500.0, 3500.0, 11000.0]), RangeError,
     r"^bio4: values up to 1\.1e\+04 .*temperature_scale=10"),
    ("bio1-kelvin", "bio1", _with("bio1", [284.0, 290.0, 269.0]), RangeError, r"^bio1: "),
    # fill values
    ("pr-1e36", "pr", _with("pr").where(_with("pr").month != 3, 1e36), RangeError,
     r"^pr: values up to 1e\+36 mm month-1 .*undecoded fill value"),
    ("tas-9999", "tas", _with("tas").where(_with("tas").month != 1, -9999.0), RangeError,
     r"^tas: values down to -9999 degC .*undecoded fill value"),
    ("map-3.4e38", "map", _with("map", [900.0, -3.4e38, 350.0]), RangeError,
     r"^map: values down to -3\.4e\+38 mm .*fill value"),
    ("bedrock-fill-in-cm", "depth_to_bedrock",
     _with("depth_to_bedrock", [55.0, 9.96921e36, 1200.0], units="cm"), RangeError,
     r"^depth_to_bedrock: values up to 9\.969e\+34 m .*read as 'cm', x 0\.01.*fill value"),
    ("bio12-9999", "bio12", _with("bio12", [900.0, -9999.0, 350.0]), RangeError,
     r"^bio12: values down to -9999 mm"),
    ("fpi-both-ends", "fpi", _with("fpi", [-1.0, 0.5, 2.0]), RangeError,
     r"^fpi: values from -1 to 2 1 outside"),
    # dims
    ("pr-no-month", "pr", _with("pr").isel(month=0, drop=True), DimensionError,
     r"^pr: expected a 'month' dim"),
    ("npp-monthly", "npp", _with("npp").expand_dims(month=12), DimensionError,
     r"^npp: a 'month' dim is not allowed"),
    ("sand-by-layer", "sand", _with("sand").expand_dims(layer=3), DimensionError,
     r"^sand: a 'layer' dim is not allowed.*sand_0cm"),
    ("tas-time-series", "tas", _with("tas").expand_dims(time=2), DimensionError,
     r"^tas: a 'time' dim is not allowed.*climatology"),
    ("bedrock-depth-dim", "depth_to_bedrock", _with("depth_to_bedrock").expand_dims(depth=2),
     DimensionError, r"^depth_to_bedrock: a 'depth' dim is not allowed"),
]


@pytest.mark.parametrize(("name", "da", "error", "match"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_bad_input(name, da, error, match):
    with pytest.raises(error, match=match):
        _run(name, da)


@pytest.mark.parametrize(("name", "da", "error", "match"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_bad_input_lazy(name, da, error, match):
    """Dask input: units and dims fail at build; ranges at compute, with nothing computed
    before."""
    climate, soil = _inputs(name)
    (climate if name in climate else soil)[name] = da
    climate, soil = climate.chunk(), soil.chunk()  # one block: the eager message
    if error is RangeError:
        with raise_if_dask_computes():
            out = from_climate(climate, soil=soil)
        with pytest.raises(RangeError, match=match):
            out.compute()
    else:
        with raise_if_dask_computes(), pytest.raises(error, match=match):
            from_climate(climate, soil=soil)


def test_other_bad_inputs():
    with pytest.raises(DimensionError, match=r"^tas: expected a 'month' dim of length 12"):
        from_climate(_monthly().isel(month=slice(0, 6)))
    with pytest.raises(UnitsError, match=r"^npp: no units attribute"):  # keyword DataArray
        from_climate(_monthly(), npp=_with("npp", units=None))
    with pytest.raises(RangeError, match=r"^npp: values down to -5"):  # keyword number
        from_climate(_monthly(), npp=-5.0)
    with pytest.raises(UnitsError, match=r"^map: .*pass an xarray.DataArray"):  # mapping
        from_climate({"maat": [10.0], "map": [500.0]}, latitude=[45.0])
    with pytest.raises(UnitsError, match=r"^npp_annual: no units"):  # found in climate
        from_climate(_monthly_ds(npp_annual=("site", [500.0, 400.0, 300.0])))
    with pytest.raises(InputError, match="temperature_scale must be a positive number"):
        from_climate(_bio(), temperature_scale=-10)
    with pytest.raises(GridError, match="same grid"):
        from_climate(_monthly().assign_coords(site=[1, 2, 3]),
                     soil=_soil().assign_coords(site=[1, 2, 4]))
    for err in (UnitsError, RangeError, DimensionError, GridError):
        assert issubclass(err, ValueError)


def test_keyword_numbers_are_canonical_and_given_arrays_converted():
    ref = _run("npp")
    soil = _soil().drop_vars("npp")
    npp = _with("npp")
    out = from_climate(_monthly(), soil=soil, npp=(npp / 1000).assign_attrs(units="kg m-2 yr-1"))
    assert_same_forcing(out, ref)
    one = from_climate(_monthly().isel(site=[0]), soil=soil.isel(site=[0]), npp=650.0)
    assert_same_forcing(one, ref.isel(site=[0]))


def test_nan_is_missing_data_not_an_error():
    out = _run("npp", _with("npp", [650.0, np.nan, 120.0]))
    assert np.isnan(out["NPP"].isel(site=1)).all()
    assert np.isfinite(out["NPP"].isel(site=[0, 2])).all()


# ------------------------------------------------------------------------------ lazy
def test_lazy_inputs_stay_lazy_and_errors_name_the_variable_at_compute():
    climate, soil = _monthly(), _soil()
    climate["pr"] = (climate["pr"] / DAYS / 86400).assign_attrs(units="kg m-2 s-1",
                                                                 _FillValue=-1.0)
    soil["npp"] = soil["npp"].copy(data=[650.0, 1e36, 120.0])
    with raise_if_dask_computes():
        out = from_climate(climate.chunk({"site": 1}), soil=soil.chunk({"site": 1}))
    assert all(out[k].chunks is not None for k in FORCING_VARIABLES)
    with pytest.raises(RangeError, match=r"^npp: values up to 1e\+36 g C m-2 yr-1"):
        out["NPP"].compute()
    good = from_climate(climate.chunk({"site": 2}), soil=_soil().chunk({"site": 2})).compute()
    assert_same_forcing(good, _reference("pr"))


# ------------------------------------------------------------------------------ hypothesis
_PREFIX = {"": 1.0, "k": 1e3, "m": 1e-3, "u": 1e-6, "G": 1e9}
_AREA = {"m-2": 1.0, "ha-1": 1e4, "km-2": 1e6, "cm-2": 1e-4}
_PER_YEAR = {"yr-1": 1.0, "d-1": 1.0 / 365.0, "s-1": 1.0 / (365.0 * 86400.0), "month-1": 1 / 12}
_LENGTH = {"mm": 1.0, "cm": 10.0, "m": 1e3, "um": 1e-3, "dm": 100.0}
_PER_MONTH = {"month-1": 1.0, "d-1": 1.0 / _D, "h-1": 1.0 / (_D * 24.0),
              "s-1": 1.0 / (_D * 86400.0)}


@st.composite
def scaled_units(draw):
    """(variable, units string, factor): canonical values x factor are in these units."""
    kind = draw(st.sampled_from(["npp", "pr", "pr_mass", "depth_to_bedrock", "map"]))
    if kind == "npp":
        p, a, t = (draw(st.sampled_from(sorted(d))) for d in (_PREFIX, _AREA, _PER_YEAR))
        return "npp", f"{p}g C {a} {t}", 1.0 / _PREFIX[p] * _AREA[a] * _PER_YEAR[t]
    if kind in ("pr", "pr_mass"):
        t = draw(st.sampled_from(sorted(_PER_MONTH)))
        if kind == "pr_mass":  # 1 kg m-2 = 1 mm of water
            p = draw(st.sampled_from(["", "k", "m"]))
            return "pr", f"{p}g m-2 {t}", 1e3 / _PREFIX[p] * _PER_MONTH[t]
        u = draw(st.sampled_from(sorted(_LENGTH)))
        return "pr", f"{u} {t}", 1.0 / _LENGTH[u] * _PER_MONTH[t]
    u = draw(st.sampled_from(sorted(_LENGTH)))
    if kind == "map":
        return "map", u, 1.0 / _LENGTH[u]
    return "depth_to_bedrock", u, 1e3 / _LENGTH[u]


@settings(max_examples=30, deadline=None)
@given(scaled_units())
def test_random_unit_scalings_give_the_same_forcing(case):
    name, units, factor = case
    out = _run(name, (_with(name) * factor).assign_attrs(units=units))
    assert_same_forcing(out, _reference(name))


_FILLABLE = sorted(_HOME)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(_FILLABLE),
       st.one_of(st.sampled_from(FILLS),
                 st.floats(1e20, 3.4e38).map(lambda x: x),
                 st.floats(1e20, 3.4e38).map(lambda x: -x)),
       st.integers(0, 2), st.integers(0, 11))
def test_random_fill_values_are_refused(name, fill, site, month):
    da = _with(name)
    values = da.values.copy()
    index = (month, site) if da.ndim == 2 else (site,)
    values[index] = fill
    with pytest.raises(RangeError, match=rf"^{name}: values .*fill value"):
        _run(name, da.copy(data=values))


_EXTRA_DIMS = ["scenario", "member", "band", "time", "layer", "depth", "month"]


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(_FILLABLE), st.sampled_from(_EXTRA_DIMS), st.integers(1, 3))
def test_random_extra_dims_broadcast_or_are_refused(name, dim, size):
    da = _with(name)
    if dim in da.dims:
        return  # the variable's own core dim
    extra = da.expand_dims({dim: size}).copy()
    if dim in ("time", "layer", "depth", "month"):
        with pytest.raises(DimensionError, match=rf"^{name}: a '{dim}' dim is not allowed"):
            _run(name, extra)
        return
    out = _run(name, extra)
    ref = _reference(name)
    for k in FORCING_VARIABLES:
        assert out[k].sizes[dim] == size, k
    for i in range(size):
        assert_same_forcing(out.isel({dim: i}), ref)

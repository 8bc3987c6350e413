"""xproda.units: parsing UDUNITS/CLM spellings and exact conversions."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from xproda import units
from xproda.errors import UnitsError


@pytest.mark.parametrize("src,dst,scale,offset", [
    ("cm", "m", 0.01, 0.0),
    ("centimeters", "m", 0.01, 0.0),
    ("degC", "K", 1.0, 273.15),
    ("degrees_Celsius", "K", 1.0, 273.15),
    ("K", "degC", 1.0, -273.15),
    ("gC/m^2/s", "g m-2 s-1", 1.0, 0.0),
    ("kgC m-2 s-1", "g m-2 s-1", 1000.0, 0.0),
    ("g C m-2", "kg m-2", 1e-3, 0.0),
    ("Mg C ha-1 yr-1", "g m-2 yr-1", 100.0, 0.0),
    ("PgC", "kg", 1e12, 0.0),
    ("%", "1", 0.01, 0.0),
    ("percent", "1", 0.01, 0.0),
    ("fraction", "1", 1.0, 0.0),
    ("unitless", "1", 1.0, 0.0),
    ("-", "1", 1.0, 0.0),
    ("", "1", 1.0, 0.0),
    ("mm mon-1", "mm month-1", 1.0, 0.0),
    ("mm month-1", "mm yr-1", 12.0, 0.0),  # pint's month is a twelfth of a year
    ("d", "yr", 1 / 365, 0.0),  # 365-day years (CLM's noleap calendar)
    ("g m-2 s-1", "g m-2 yr-1", 86400 * 365.0, 0.0),
])
def test_conversion(src, dst, scale, offset):
    s, o = units.conversion(src, dst, name="x")
    assert s == pytest.approx(scale, rel=1e-12) and o == pytest.approx(offset, abs=1e-9)


def test_per_second_to_monthly_amounts_use_each_months_length():
    da = xr.DataArray(np.ones(12), dims="month", attrs={"units": "g m-2 s-1", "long_name": "x"})
    out, note = units.convert(da, "g m-2 month-1", name="CWD_INPUT")
    np.testing.assert_allclose(out.values, 86400.0 * units.DAYS_IN_MONTH_NOLEAP)
    assert out.attrs == {"units": "g m-2 month-1", "long_name": "x"}
    assert note.startswith("CWD_INPUT: converted from 'g m-2 s-1' to 'g m-2 month-1'")


def test_per_year_to_monthly_amounts_sum_to_the_year():
    da = xr.DataArray(np.full(12, 365.0), dims="month", attrs={"units": "g m-2 yr-1"})
    out, _ = units.convert(da, "g m-2 month-1", name="x")
    assert float(out.sum()) == pytest.approx(365.0, rel=1e-14)


def test_per_second_on_a_calendar_time_axis():
    time = xr.date_range("2001-01-01", periods=14, freq="MS", calendar="noleap", use_cftime=True)
    da = xr.DataArray(np.ones(14), dims="time", coords={"time": time},
                      attrs={"units": "g m-2 s-1"})
    out, _ = units.convert(da, "g m-2 month-1", name="x")
    assert out.values[1] == 28 * 86400.0 and out.values[13] == 28 * 86400.0


def test_same_units_unchanged():
    da = xr.DataArray(np.ones(3), dims="x", attrs={"units": "m"})
    out, note = units.convert(da, "m", name="x")
    assert out is da and note is None


@pytest.mark.parametrize("src,dst,match", [
    ("m", "K", "cannot be converted to the expected 'K'"),
    ("kg", "m", "cannot be converted"),
    ("blorp", "m", "cannot read units 'blorp'"),
])
def test_errors_name_the_variable(src, dst, match):
    with pytest.raises(UnitsError, match=f"ALTMAX: .*{match}"):
        units.conversion(src, dst, name="ALTMAX")


def test_rate_without_month_lengths_refused():
    da = xr.DataArray(np.ones(3), dims="site", attrs={"units": "g m-2 s-1"})
    with pytest.raises(UnitsError, match="needs the month lengths"):
        units.convert(da, "g m-2 month-1", name="LITR1_INPUT")


def test_missing_units_refused():
    with pytest.raises(UnitsError, match="ALTMAX: no units attribute; expected 'm'"):
        units.convert(xr.DataArray(np.ones(2)), "m", name="ALTMAX")


def test_expected_units_do_not_load_the_registry():
    """Data already in the expected spellings is checked and conformed without building the
    units registry (cf_xarray's pint registry: ~0.5 s at the start of every run; xarray
    itself may import pint, to recognise its arrays)."""
    import subprocess
    import sys

    script = (
        "import sys, xproda\n"
        "from xproda.testing import forcing_dataset\n"
        "from xproda.xr import contract\n"
        "from xproda.models.forcing import FORCING_SCHEMA\n"
        "ds = forcing_dataset(4, seed=1)\n"
        "names = [k for k in ds.data_vars if k in FORCING_SCHEMA]\n"
        "assert names and all(ds[k].attrs['units'] == FORCING_SCHEMA[k].units for k in names)\n"
        "assert not contract.forcing_problems(ds, names)\n"
        "contract.conform_forcing(ds, names)\n"
        "assert 'cf_xarray.units' not in sys.modules, 'the units registry was built'\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert units.conversion("g m-2 month-1", "g m-2 month-1") == (1.0, 0.0)
    assert not units.needs_month_lengths("g m-2 s-1", "g m-2 s-1")
    assert units.is_dimensionless("unitless") and not units.is_dimensionless("m")

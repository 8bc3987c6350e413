"""Kernel forcing from climate and soil covariates: :func:`from_climate`.

For users without CLM5 history output: the inputs are read against the input contract
(:mod:`xproda.climate.contract`), the monthly climate reconstructed where needed
(:mod:`xproda.climate.reconstruction`), and the forcing computed column by column
(:mod:`xproda.climate.columns`).  Absent inputs take :data:`DEFAULTS`, recorded in the
output's attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from xproda import conventions, grid
from xproda.climate.columns import forcing_block, forcing_dataset
from xproda.climate.contract import (
    BIOCLIM_NAMES,
    ClimateInputs,
    as_dataset,
    check_temperature_scale,
)
from xproda.climate.formulas import aridity_index, fpi_rule, miami_npp, thornthwaite_pet
from xproda.climate.formulas import tree_fraction_rule
from xproda.climate.metadata import annotated, history, month_coord
from xproda.climate.reconstruction import cell_latitude, reconstruct_monthly
from xproda.errors import GridError, InputError

__all__ = ["DEFAULTS", "from_climate"]

#: defaults used where an input is absent (each use is recorded in the output's attrs):
#: sand content (%) at every depth (a loam), depth to bedrock (m; the full 8.6 m column, i.e.
#: no bedrock) and elevation (m; an upland, so no saturated-lowland anoxia)
DEFAULTS: dict[str, float] = {
    "sand": 40.0,
    "depth_to_bedrock": float(grid.SOIL_DEPTH),
    "elevation": 2000.0,
}
_SAND_LAYERS = ("sand_0cm", "sand_30cm", "sand_100cm")


def _broadcast_block(tas, pr, pet, *state):
    """:func:`forcing_block` on inputs broadcast to one batch shape, float64.

    The inputs' ranges were checked when they were read (:data:`~xproda.climate.CLIMATE_SCHEMA`).
    """
    batch = np.broadcast_shapes(tas.shape[:-1], pr.shape[:-1], pet.shape[:-1],
                                *(np.shape(v) for v in state))
    tas, pr, pet = (np.broadcast_to(np.asarray(a, np.float64), batch + (12,))
                    for a in (tas, pr, pet))
    state = [np.broadcast_to(np.asarray(v, np.float64), batch) for v in state]
    return forcing_block(tas, pr, pet, *state)


def _annual_block(tas: np.ndarray, pr: np.ndarray) -> tuple[np.ndarray, ...]:
    """PET ``[..., 12]`` and annual mean T, total P, warmest month, total PET ``[...]``.

    Computed on contiguous copies, so every cell's values depend on its 12 months only (not
    on the memory layout of the chunk): chunk invariant, eager == lazy.  No overflow warnings
    on out-of-range input (the forcing kernel raises on it).
    """
    tas, pr = np.broadcast_arrays(tas, pr)  # extra dims of one of them (a scenario) broadcast
    tas = np.ascontiguousarray(tas, dtype=np.float64)
    pr = np.ascontiguousarray(pr, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        pet = thornthwaite_pet(tas)
    return pet, tas.mean(-1), pr.sum(-1), tas.max(-1), pet.sum(-1)


def from_climate(
    climate: xr.Dataset | Mapping[str, Any],
    *,
    soil: xr.Dataset | Mapping[str, Any] | None = None,
    npp: float | xr.DataArray | None = None,
    tree_fraction: float | xr.DataArray | None = None,
    fpi: float | xr.DataArray | None = None,
    elevation: float | xr.DataArray | None = None,
    latitude: Any = None,
    temperature_scale: float = 1.0,
    amplitude: float | xr.DataArray | None = None,
    include_climate: bool = False,
) -> xr.Dataset:
    """CLM5-style kernel forcing built from climate (and optionally soil) covariates.

    For users without CLM5 history output: the forcing the process models need is derived column
    by column from a monthly climatology (or from bioclimatic summaries or site means,
    reconstructed with :func:`~xproda.climate.monthly_climate_from_bioclim`) with the formulas
    of the synthetic world (:func:`~xproda.climate.column_forcing`): soil temperature from the
    annual harmonic of air temperature damped and lagged with depth (analytic heat conduction,
    snow offset); active layer as CLM5 computes it; water scalar from precipitation /
    Thornthwaite PET; oxygen scalar from wetness and elevation; bedrock layer from the depth to
    bedrock; monthly NPP and litter inputs split by tree fraction.  Formulas, sources and
    limits: ``docs/user-guide/forcing-from-climate.md``.

    The computation is lazy for dask-backed inputs (``xarray.apply_ufunc`` with
    ``dask="parallelized"``; every column depends on its own inputs only, so the values do
    not depend on the chunking) and eager for numpy-backed inputs.  A cell with a missing
    (NaN) input gets NaN forcing.

    Every input is read against :data:`~xproda.climate.CLIMATE_SCHEMA`: its ``units`` attribute
    is converted to the canonical units with :mod:`xproda.units` (pint; per-second and per-day
    rates of a monthly climatology with the month lengths of a 365-day year, precipitation
    masses with a water density of 1000 kg m-3), and required where values in other common units
    would pass unnoticed (``pr``, ``map``, ``depth_to_bedrock``, ``npp``); undecoded
    ``_FillValue``/``missing_value`` attributes become NaN; values outside the plausible range
    raise.  Each conversion is one line of the output's ``history``.

    Parameters
    ----------
    climate : xarray.Dataset or mapping
        On any grid (``lat``/``lon``, projected, or a ``site`` dim; extra dims such as a
        scenario broadcast), one of, in this order of preference:

        - ``tas`` (°C, or per its ``units``) and ``pr`` (``units`` required: mm month-1,
          kg m-2 s-1, mm d-1, m month-1, ...) with a ``month`` dim of length 12 (January
          first);
        - bioclimatic variables ``bio1`` ... ``bio19`` (any subset sufficient for
          :func:`~xproda.climate.monthly_climate_from_bioclim`, e.g. ``bio4``, ``bio11``,
          ``bio12``);
        - site values ``maat`` (°C) and ``map`` (``units`` required: mm, cm, m ...), with a
          default seasonal amplitude (``amplitude``).

        May also hold the column variables listed under ``soil``.  A mapping of numpy arrays
        is taken as 1-D arrays over ``site`` (then pass ``latitude`` for bioclimatic or site
        inputs).
    soil : xarray.Dataset or mapping, keyword-only, optional
        Soil covariates on the same grid: ``sand_0cm``, ``sand_30cm``, ``sand_100cm`` (%,
        interpolated linearly in depth between 0, 0.3 and 1 m, constant below) or a single
        ``sand`` (%); ``depth_to_bedrock`` (``units`` required: m, cm ...); and, used when
        the keyword of the same name is not given, ``elevation`` (m), ``npp`` or
        ``npp_annual`` (``units`` required: g C m-2 yr-1, kg C m-2 yr-1, g C m-2 s-1 ...),
        ``tree_fraction`` and ``fpi`` (1) (each looked up in ``soil``, then in
        ``climate``).  Missing: sand 40 % and no bedrock within the 8.6 m
        column (:data:`DEFAULTS`); every default used is recorded in the ``comment`` of the
        variable it affects and in the dataset's ``forcing_assumptions`` and ``history``.
    npp : float or xarray.DataArray, keyword-only, optional
        Annual NPP: a number in g C m-2 yr-1, or a DataArray with ``units``.  Default: the
        Miami model (Lieth 1975, :func:`miami_npp`) from annual mean temperature and
        precipitation.
    tree_fraction : float or xarray.DataArray, keyword-only, optional
        Woody fraction of vegetation (1); sets the coarse woody debris share (25 % of litter
        at full tree cover) and the litter quality split.  Default:
        ``σ((P - 500) / 120) σ((T_warmest - 10) / 1.5)`` (forests need ~500 mm and a warmest
        month above 10 °C).
    fpi : float or xarray.DataArray, keyword-only, optional
        Fraction of potential N immobilisation (1), the same in every layer and month.
        Default: ``clip(0.35 + 0.6 σ((T - 5) / 6), 0.05, 1)`` with ``T`` the annual mean air
        temperature (°C).
    elevation : float or xarray.DataArray, keyword-only, optional
        Elevation (m), used by the oxygen scalar (saturated lowlands below ~400 m in humid
        climates).  Default: ``soil["elevation"]``, else ``climate["elevation"]``, else 2,000
        m (no lowland anoxia).
    latitude, temperature_scale, amplitude
        Passed to :func:`~xproda.climate.monthly_climate_from_bioclim` (bioclimatic or site
        inputs only).
    include_climate : bool, keyword-only, default False
        Also return the monthly ``tas``, ``pr`` and ``pet`` (Thornthwaite PET, mm month-1)
        the forcing was made from.

    Returns
    -------
    xarray.Dataset
        The kernel forcing (:data:`~xproda.climate.FORCING_VARIABLES`, names and units of
        :data:`~xproda.models.forcing.FORCING_SCHEMA`): ``TSOI``, ``W_SCALAR``,
        ``O_SCALAR``, ``FPI_vr`` with dims ``(month, layer, <spatial>)`` (float32, as in CLM
        history files); ``ALTMAX``, ``ALTMAX_LASTYEAR``, ``nbedrock``, ``NPP``,
        ``CWD_INPUT``, ``LITR1_INPUT`` .. ``LITR3_INPUT`` with ``(month, <spatial>)``;
        ``CELLSAND`` with ``(layer, <spatial>)``; coordinates ``month``, ``layer``, ``depth``
        and the input's spatial coordinates and CRS.  Accepted by
        :func:`xproda.xr.api.steady_state` (``ds.proda.steady_state``) and
        :func:`xproda.train_network` (``forcing=``).

    Raises
    ------
    xproda.errors.InputError
        Missing climate inputs (the message lists the accepted variables with their units
        and the variables found); options that do not apply (``amplitude`` or
        ``temperature_scale`` with monthly ``tas``/``pr``); no latitude.
    xproda.errors.UnitsError
        Units that cannot be read, or of another physical dimension than the canonical
        units, or missing where :data:`~xproda.climate.CLIMATE_SCHEMA` requires them (the
        message names the variable and the expected units).
    xproda.errors.DimensionError
        A ``month`` dim that is not 12 long; a reserved dim on an input (``month`` on an
        annual value, ``time``, ``layer``, ``depth``).
    xproda.errors.GridError
        Inputs on grids that do not match.
    xproda.errors.RangeError
        Values outside the plausible range of :data:`~xproda.climate.CLIMATE_SCHEMA` (undecoded
        fill values, wrong or mislabelled units), naming the variable, the values found and the
        range: at once for numpy input, at compute time for dask input.

    All of these are ``ValueError`` subclasses.
    TypeError
        ``climate``, ``soil`` or a field of the wrong type.

    Examples
    --------
    >>> import xarray as xr
    >>> from xproda.climate import from_climate
    >>> yx = ("lat", "lon")
    >>> clim = xr.Dataset({"bio4": (yx, [[900.0]]), "bio11": (yx, [[-4.0]]),
    ...                    "bio12": (yx, [[650.0]])}, coords={"lat": [48.0], "lon": [11.0]})
    >>> soil = xr.Dataset({"depth_to_bedrock": (yx, [[120.0]], {"units": "cm"})})
    >>> f = from_climate(clim, soil=soil)
    >>> f["TSOI"].dims, f["TSOI"].attrs["units"], int(f["nbedrock"][0, 0, 0])
    (('month', 'layer', 'lat', 'lon'), 'K', 9)
    >>> f.attrs["history"].splitlines()[0].split(": ", 1)[1]  # after the timestamp
    "from_climate: depth_to_bedrock: converted from 'cm' to 'm' (x 0.01)"
    """
    ds = as_dataset(climate, "climate")
    soil_ds = None if soil is None else as_dataset(soil, "soil")
    inputs = ClimateInputs(ds, soil_ds,
                           temperature_scale=check_temperature_scale(temperature_scale))
    notes: list[str] = []
    comments: dict[str, str] = {}
    have = {str(k) for k in ds.data_vars}
    if {"tas", "pr"} & have:
        missing = [f"{k} ({u})" for k, u in (("tas", "°C"), ("pr", "mm month-1"))
                   if k not in have]
        if missing:
            raise InputError(f"climate: monthly climate needs both tas (°C) and pr "
                             f"(mm month-1) with a month dim; missing {', '.join(missing)}")
        if amplitude is not None or temperature_scale != 1.0:
            raise InputError("amplitude and temperature_scale apply to bioclimatic or site "
                             "inputs only, not to monthly tas/pr")
        tas, pr = inputs["tas"], inputs["pr"]
        notes.append("monthly climate given (tas, pr)")
    elif (set(BIOCLIM_NAMES) | {"maat", "map"}) & have:
        tas, pr, how = reconstruct_monthly(inputs, cell_latitude(ds, latitude), amplitude)
        notes.append("monthly climate reconstructed: " + "; ".join(how))
    else:
        raise InputError(
            "climate: expected monthly tas (°C) and pr (mm month-1) with a 'month' dim, or "
            "bioclimatic variables bio1..bio19 (°C, mm; e.g. bio4 + bio11 + bio12), or site "
            f"values maat (°C) and map (mm); found variables {sorted(have)}"
        )
    tas = tas.drop_vars([c for c in tas.coords if c != "month" and c not in tas.dims])
    pr = pr.drop_vars([c for c in pr.coords if c != "month" and c not in pr.dims])
    if tas.chunks is not None or pr.chunks is not None:
        tas, pr = tas.chunk({"month": -1}), pr.chunk({"month": -1})
    pet, t_mean, p_ann, t_warm, pet_ann = xr.apply_ufunc(
        _annual_block, tas, pr, input_core_dims=[["month"], ["month"]],
        output_core_dims=[["month"], [], [], [], []], dask="parallelized",
        output_dtypes=[np.float64] * 5,
    )
    # -- column state: given > a variable of soil/climate > default (recorded) ------------------
    state: dict[str, xr.DataArray] = {}

    def field(key: str, value: Any, names: tuple[str, ...],
              default: Callable[[], xr.DataArray], var: str, note: str) -> None:
        found = inputs.first(names)
        if value is not None:
            state[key] = inputs.given(value, names[0])
        elif found is not None:
            state[key] = inputs[found]
        else:
            state[key] = default()
            comments[var] = note
            notes.append(note)

    field("npp_annual", npp, ("npp", "npp_annual"), lambda: miami_npp(t_mean, p_ann),
          "NPP", "NPP from the Miami model (Lieth 1975) of annual temperature and precipitation")
    field("tree_fraction", tree_fraction, ("tree_fraction",),
          lambda: tree_fraction_rule(p_ann, t_warm), "CWD_INPUT",
          "tree fraction from climate: sigmoid((P - 500) / 120) sigmoid((T_warmest - 10) / 1.5)")
    field("fpi", fpi, ("fpi",), lambda: fpi_rule(t_mean), "FPI_vr",
          "FPI from climate: clip(0.35 + 0.6 sigmoid((T - 5) / 6), 0.05, 1)")
    state["aridity_index"] = aridity_index(p_ann, pet_ann)
    field("elevation", elevation, ("elevation",),
          lambda: xr.DataArray(DEFAULTS["elevation"]), "O_SCALAR",
          f"no elevation given: {DEFAULTS['elevation']:g} m assumed (no lowland anoxia)")
    field("depth_to_bedrock", None, ("depth_to_bedrock",),
          lambda: xr.DataArray(DEFAULTS["depth_to_bedrock"]), "nbedrock",
          f"no depth to bedrock given: {DEFAULTS['depth_to_bedrock']:g} m assumed (no bedrock "
          "within the soil column)")
    state.update(_sand(inputs, comments, notes))
    # -- one grid ---------------------------------------------------------------------------------
    named = {"tas": tas, "pr": pr, "pet": pet}
    named.update({k: v.drop_vars([c for c in v.coords if c not in v.dims])
                  for k, v in state.items()})
    try:
        aligned = xr.align(*named.values(), join="exact")
    except ValueError as err:
        raise GridError(
            "from_climate: the climate and soil inputs (and npp/tree_fraction/fpi/elevation) "
            f"must share the same grid coordinates: {err}"
        ) from err
    forcing = forcing_dataset(xr.Dataset(dict(zip(named, aligned))), block=_broadcast_block)
    # -- metadata (from the registry; input attrs never reach the output) -------------------------
    for name, text in comments.items():
        forcing[name].attrs["comment"] = text
    if include_climate:
        for k, v in (("tas", tas), ("pr", pr), ("pet", pet)):
            forcing[k] = annotated(v.transpose("month", ...), k)
    keep = {k: v for k, v in ds.coords.items()
            if k != "month" and set(v.dims) <= set(forcing.dims) | {"bnds", "nv", "bounds"}}
    forcing = forcing.assign_coords(keep).assign_coords(month=month_coord())
    forcing = forcing.assign_coords(conventions.layer_coords())
    if "spatial_ref" in forcing.coords:
        for v in forcing.data_vars.values():
            v.encoding["grid_mapping"] = "spatial_ref"
    forcing.attrs = {
        "Conventions": conventions.CF_CONVENTIONS,
        "title": "CLM5-style soil-carbon forcing built from climate covariates",
        "source": "xproda.climate.from_climate: analytic soil temperature, CLM5 active layer, "
                  "Thornthwaite water balance, Miami-model litter inputs",
        "references": "docs/user-guide/forcing-from-climate.md",
        "forcing_assumptions": "; ".join(notes),
        "history": history("from_climate", inputs.log, "; ".join(notes)),
    }
    return forcing


def _sand(inputs: ClimateInputs, comments: dict[str, str], notes: list[str]) -> dict[str, Any]:
    """Sand content (%) at 0, 30 and 100 cm: the three layers, one ``sand``, or the default."""
    present = [k for k in _SAND_LAYERS if k in inputs]
    if len(present) == len(_SAND_LAYERS):
        return {k: inputs[k] for k in _SAND_LAYERS}
    if present:
        raise InputError(f"soil: give all of {list(_SAND_LAYERS)} (%) or a single 'sand' (%); "
                         f"found {present}")
    if "sand" in inputs:
        comments["CELLSAND"] = "one sand content used at every depth"
        return dict.fromkeys(_SAND_LAYERS, inputs["sand"])
    comments["CELLSAND"] = f"no sand content given: {DEFAULTS['sand']:g} % assumed"
    notes.append(comments["CELLSAND"])
    return dict.fromkeys(_SAND_LAYERS, xr.DataArray(DEFAULTS["sand"]))

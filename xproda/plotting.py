"""Figures of xproda results: global maps, observed vs predicted SOC, depth profiles, losses.

matplotlib is an optional dependency (``pip install "xproda[plot]"``); it is imported only
when a function here is called, so ``import xproda.plotting`` works without it.

Every function draws into an existing axes (``ax=...``) or a new figure, and returns the
axes (or array of axes), so figures can be composed and saved with ``fig.savefig``.

* :func:`map_plot` -- a global latitude/longitude map of a 2-D field with a colour bar
  labelled with the variable's ``long_name`` and ``units``; cells without data (ocean) are
  left blank on a light-grey background; coastlines from the ``global-land-mask`` GLOBE
  1 km mask (a core dependency: no map package is needed).
* :func:`difference_map` -- a field minus a reference on a diverging scale centred on 0.
* :func:`predicted_vs_observed` -- scatter of modelled against observed values with the 1:1
  line and the skill (R^2, RMSE; :func:`xproda.learning.crossval.skill_scores`).
* :func:`depth_profile` -- observed layers and modelled SOC profiles for a few sites.
* :func:`loss_curve` -- training and validation loss per epoch
  (:meth:`xproda.learning.training.TrainingReport.plot`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["map_plot", "difference_map", "coastlines", "predicted_vs_observed", "depth_profile", "loss_curve", "pretty_units",
           "pyplot"]

#: Background of map axes: the colour of cells without data (ocean, ice).
NO_DATA_COLOUR = "#d9d9d9"

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def pyplot() -> Any:
    """``matplotlib.pyplot``, or an ImportError saying how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("xproda.plotting needs matplotlib: pip install 'xproda[plot]' "
                          "(or pip install matplotlib)") from err
    return plt


def pretty_units(units: str | None) -> str:
    """UDUNITS-style units with superscript exponents, for axis labels.

    Parameters
    ----------
    units : str or None
        E.g. ``"kg m-2"`` or ``"g m-2 yr-1"``; ``"1"`` (dimensionless) and None give ``""``.

    Returns
    -------
    str

    Examples
    --------
    >>> pretty_units("g C m-2 yr-1")
    'g C m⁻² yr⁻¹'
    >>> pretty_units("1")
    ''
    """
    if units is None or str(units).strip() in ("", "1"):
        return ""
    return re.sub(r"(?<=[A-Za-z])(-?\d+)\b", lambda m: m.group(1).translate(_SUPERSCRIPT),
                  str(units))


def _label(name: str, units: str | None) -> str:
    u = pretty_units(units)
    return f"{name} ({u})" if u else name


def _new_axes(ax: Any, figsize: tuple[float, float]) -> Any:
    if ax is not None:
        return ax
    _, ax = pyplot().subplots(figsize=figsize, layout="constrained")
    return ax


def _edges(centres: np.ndarray, lo: float, hi: float) -> np.ndarray:
    c = np.asarray(centres, dtype=float)
    if c.size == 1:
        return np.array([lo, hi])
    mid = (c[1:] + c[:-1]) / 2
    first = c[0] - (mid[0] - c[0])
    last = c[-1] + (c[-1] - mid[-1])
    return np.clip(np.concatenate([[first], mid, [last]]), lo, hi)


@functools.lru_cache(maxsize=1)
def _land_grid(step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from global_land_mask import globe

    lat = np.arange(-90 + step / 2, 90, step)
    lon = np.arange(-180 + step / 2, 180, step)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    return lat, lon, globe.is_land(la, lo).astype(float)


def coastlines(ax: Any, *, resolution: float = 0.25, color: str = "0.25",
               linewidth: float = 0.5) -> Any:
    """Draw coastlines into a latitude/longitude axes (degrees east from -180 or 0).

    The 0.5 contour of the ``global-land-mask`` land mask (GLOBE, 1 km) sampled every
    ``resolution`` degrees: no map package or download is needed; the lines are as fine as
    the sampling. Longitudes 0-360 are drawn too when the axes extend past 180 °E.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    resolution : float, keyword-only, default 0.25
        Sampling of the mask (degrees).
    color : str, keyword-only, default "0.25"
    linewidth : float, keyword-only, default 0.5

    Returns
    -------
    matplotlib.contour.QuadContourSet
        The last contour set drawn.
    """
    lat, lon, land = _land_grid(float(resolution))
    lim = ax.get_xlim(), ax.get_ylim()
    out = None
    for shift in (0.0, 360.0) if max(lim[0]) > 180 else (0.0,):
        out = ax.contour(lon + shift, lat, land, levels=[0.5], colors=color,
                         linewidths=linewidth)
    ax.set_xlim(*lim[0])
    ax.set_ylim(*lim[1])
    return out


def map_plot(
    da: Any,
    *,
    ax: Any = None,
    cmap: str = "viridis",
    title: str | None = None,
    robust: bool = True,
    log: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
    label: str | None = None,
    units: str | None = None,
    colorbar: bool = True,
    coast: bool = True,
    norm: Any = None,
) -> Any:
    """Global latitude/longitude map of a 2-D field, land only, with a labelled colour bar.

    Parameters
    ----------
    da : xarray.DataArray
        A 2-D field on a geographic grid with 1-D latitude and longitude coordinates
        (degrees; any names :func:`xproda.spatial.lat_lon` recognises). NaN cells (ocean,
        ice, flagged columns) are not drawn; the light-grey axes background shows through.
    ax : matplotlib.axes.Axes, optional
        Axes to draw into (default: a new figure).
    cmap : str, default "viridis"
        Colour map.
    title : str, optional
        Axes title (default: the DataArray's ``long_name`` or name).
    robust : bool, default True
        Colour limits from the 2nd and 98th percentiles of the finite values instead of the
        extremes (one outlier cell does not wash out the map). ``vmin``/``vmax`` win.
    log : bool, default False
        Logarithmic colour scale (positive values only; values <= 0 are not drawn).
    vmin, vmax : float, optional
        Colour limits in the units of ``da``.
    label : str, optional
        Colour-bar label (default: ``long_name (units)`` from the attributes).
    units : str, optional
        Units shown in the default label instead of ``da.attrs["units"]`` (e.g. ``"kg C m-2"``
        for a carbon stock stored as ``kg m-2``).
    colorbar : bool, default True
        Draw the colour bar.
    coast : bool, default True
        Draw coastlines (:func:`coastlines`).
    norm : matplotlib.colors.Normalize, optional
        Colour normalisation (overrides ``log``, ``vmin``, ``vmax``; e.g. a diverging
        ``TwoSlopeNorm``, as :func:`difference_map` uses).

    Returns
    -------
    matplotlib.axes.Axes
        The axes; the colour bar is ``ax.collections[0].colorbar``.

    Raises
    ------
    ValueError
        If ``da`` is not 2-D on latitude/longitude, or has no finite value to show.
    """
    import matplotlib.colors as mcolors

    from xproda.spatial import lat_lon

    if getattr(da, "ndim", None) != 2:
        raise ValueError(f"map_plot needs a 2-D (lat, lon) DataArray, got dims "
                         f"{getattr(da, 'dims', None)}; select or reduce the other dims first")
    lat, lon = lat_lon(da)
    if lat.ndim != 1 or lon.ndim != 1:
        raise ValueError("map_plot needs 1-D latitude and longitude coordinates")
    da = da.transpose(lat.dims[0], lon.dims[0])
    values = np.asarray(da.values, dtype=float)
    if log:
        values = np.where(values > 0, values, np.nan)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError(f"map_plot: {da.name or 'the DataArray'} has no finite "
                         f"{'positive ' if log else ''}value to show")
    lo, hi = (np.percentile(finite, [2, 98]) if robust else (finite.min(), finite.max()))
    lo = float(lo if vmin is None else vmin)
    hi = float(hi if vmax is None else vmax)
    if hi <= lo:
        hi = lo + (abs(lo) * 1e-6 or 1.0)
    if norm is None:
        norm = mcolors.LogNorm(lo, hi) if log else mcolors.Normalize(lo, hi)
    else:
        lo, hi = float(norm.vmin), float(norm.vmax)
    ax = _new_axes(ax, (8.0, 4.2))
    lat_e = _edges(lat.values, -90.0, 90.0)
    lon_e = _edges(lon.values, -360.0, 360.0)
    mesh = ax.pcolormesh(lon_e, lat_e, np.ma.masked_invalid(values), cmap=cmap, norm=norm,
                         shading="flat", rasterized=True)
    ax.set_facecolor(NO_DATA_COLOUR)
    ax.set_xlim(lon_e.min(), lon_e.max())
    ax.set_ylim(max(lat_e.min(), -90.0), min(lat_e.max(), 90.0))
    ax.set_aspect("equal")
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    step = 60 if lon_e.max() - lon_e.min() > 180 else 30
    ax.set_xticks(np.arange(np.ceil(lon_e.min() / step) * step, lon_e.max() + 1e-9, step))
    ax.set_yticks(np.arange(-90, 91, 30)[(np.arange(-90, 91, 30) >= lat_e.min() - 1e-9)
                                         & (np.arange(-90, 91, 30) <= lat_e.max() + 1e-9)])
    if coast:
        coastlines(ax)
    name = str(da.attrs.get("long_name") or da.name or "")
    ax.set_title(name if title is None else title)
    if colorbar:
        ext = ("both" if finite.min() < lo and finite.max() > hi else "min" if finite.min() < lo
               else "max" if finite.max() > hi else "neither")
        cb = ax.figure.colorbar(mesh, ax=ax, shrink=0.85, pad=0.02, extend=ext)
        cb.set_label(label if label is not None else _label(
            str(da.attrs.get("long_name") or da.name or "value"),
            units if units is not None else da.attrs.get("units")))
    return ax


def difference_map(
    da: Any,
    reference: Any,
    *,
    ax: Any = None,
    relative: bool = False,
    cmap: str = "RdBu_r",
    title: str | None = None,
    label: str | None = None,
    units: str | None = None,
    coast: bool = True,
) -> Any:
    """Map of ``da - reference`` (or the relative difference) on a diverging scale centred on 0.

    Parameters
    ----------
    da, reference : xarray.DataArray
        2-D fields on the same latitude/longitude grid (aligned exactly; a mismatch raises).
    ax : matplotlib.axes.Axes, optional
    relative : bool, keyword-only, default False
        Show ``(da - reference) / reference`` (as a fraction, units "1") instead.
    cmap : str, keyword-only, default "RdBu_r"
        A diverging colour map (red: ``da`` above the reference).
    title, label, units : str, optional
        As for :func:`map_plot` (default label: "difference" with the units of ``da``).
    coast : bool, keyword-only, default True

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.colors as mcolors
    import xarray as xr

    a, b = xr.align(da, reference, join="exact")
    diff = (a - b) / b if relative else a - b
    values = np.asarray(diff.values, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError("difference_map: no cell where both fields are finite")
    lim = float(np.percentile(np.abs(finite), 98)) or float(np.abs(finite).max()) or 1.0
    u = "1" if relative else (units if units is not None else da.attrs.get("units"))
    if label is None:  # a figure label, not metadata: diff keeps no attrs
        label = _label("relative difference" if relative else "difference", u)
    name = str(da.attrs.get("long_name") or da.name or "")
    return map_plot(diff, ax=ax, cmap=cmap, coast=coast, label=label,
                    title=title if title is not None else f"{name}: difference to reference",
                    norm=mcolors.TwoSlopeNorm(0.0, -lim, lim))


def predicted_vs_observed(
    mod: Any,
    obs: Any,
    *,
    ax: Any = None,
    log: bool = True,
    units: str = "g C m-3",
    quantity: str = "SOC",
    title: str | None = None,
    mask: Any = None,
) -> Any:
    """Scatter of predicted against observed values with the 1:1 line and skill scores.

    Parameters
    ----------
    mod, obs : array_like
        Modelled and observed values of the same shape (the ``(mod, obs)`` order of every
        xproda function taking such a pair (e.g. SOC density at the observed
        layers, ``[S, D]``); NaN entries (padding) are ignored.
    ax : matplotlib.axes.Axes, optional
    log : bool, default True
        Logarithmic axes (non-positive values are not drawn).
    units : str, default "g C m-3"
        Units of ``obs`` and ``mod`` (axis labels and RMSE).
    quantity : str, default "SOC"
        Name of the quantity in the axis labels.
    title : str, optional
    mask : array_like of bool, optional
        True where an observation is used.

    Returns
    -------
    matplotlib.axes.Axes
        The annotation shows n, R^2 (1 - SSE/SST of the values), R^2 of log values and the
        RMSE, from :func:`xproda.learning.crossval.skill_scores`.
    """
    from xproda.learning.crossval import skill_scores, valid_pairs

    m, o, ok = valid_pairs(mod, obs, mask=mask)
    sk = skill_scores(m[ok], o[ok])
    show = ok & ((o > 0) & (m > 0) if log else True)
    ax = _new_axes(ax, (5.0, 5.0))
    ax.scatter(o[show], m[show], s=8, alpha=0.5, edgecolors="none", color="C0",
               label="observed layers")
    if show.any():
        lo = float(min(o[show].min(), m[show].min()))
        hi = float(max(o[show].max(), m[show].max()))
        if log:
            lo, hi = lo / 1.5, hi * 1.5
        else:
            pad = 0.05 * (hi - lo or 1.0)
            lo, hi = lo - pad, hi + pad
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="1:1")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_aspect("equal")
    ax.set_xlabel(_label(f"observed {quantity}", units))
    ax.set_ylabel(_label(f"predicted {quantity}", units))
    u = pretty_units(units)
    text = (f"n = {int(sk['n'])}\nR² = {sk['r2']:.2f}\nR² (log) = {sk['r2_log']:.2f}\n"
            f"RMSE = {sk['rmse']:,.0f} {u}")
    ax.text(0.03, 0.97, text, transform=ax.transAxes, va="top", ha="left", fontsize="small",
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
    ax.legend(loc="lower right", fontsize="small")
    if title is not None:
        ax.set_title(title)
    return ax


def depth_profile(
    profiles: Any,
    modelled: Mapping[str, Any],
    *,
    sites: Sequence[Any] | None = None,
    max_sites: int = 4,
    axes: Any = None,
    units: str = "g C m-3",
    max_depth: float | None = None,
    log: bool = True,
) -> Any:
    """Observed layers and modelled SOC profiles of a few sites, one panel per site.

    Parameters
    ----------
    profiles : pandas.DataFrame
        Profile table (:mod:`xproda.sites.observations` schema): ``profile_id``, ``top``,
        ``bottom`` (m) and ``soc`` (``units``); ``lat``/``lon`` label the panels when present.
    modelled : mapping of str to xarray.DataArray
        Label -> modelled SOC density (``units``) with dims ``(site, layer)`` on the 20 model
        layers (:data:`xproda.grid.ZSOI` node depths), the ``site`` coordinate holding
        profile ids (e.g. ``{"network": ..., "truth": ...}``). Drawn as lines.
    sites : sequence, optional
        Profile ids to draw (default: the first ``max_sites`` profiles of ``profiles``
        present in every modelled array).
    max_sites : int, default 4
    axes : array of matplotlib.axes.Axes, optional
        One axes per site (default: a new figure with one row of panels).
    units : str, default "g C m-3"
    max_depth : float, optional
        Deepest depth shown (m); default: 1.5 x the deepest observed bottom, at least 1 m.
    log : bool, default True
        Logarithmic SOC axis on every panel (each spanning at least 0.7 decades, so that the
        panels read alike and ticks are labelled); SOC below 1e-3 of a modelled profile's
        maximum (below bedrock) is not drawn. False: linear axes from 0.

    Returns
    -------
    numpy.ndarray of matplotlib.axes.Axes
    """
    from xproda import grid

    for c in ("profile_id", "top", "bottom", "soc"):
        if c not in profiles.columns:
            raise KeyError(f"profiles lacks column {c!r} (expected the profile-table schema)")
    if not modelled:
        raise ValueError("modelled must hold at least one labelled DataArray")
    for k, v in modelled.items():
        if set(v.dims) != {"site", "layer"}:
            raise ValueError(f"modelled[{k!r}] must have dims (site, layer), got {v.dims}")
    if sites is None:
        common = set.intersection(*[set(map(str, v["site"].values)) for v in modelled.values()])
        ids = [p for p in dict.fromkeys(profiles["profile_id"]) if str(p) in common]
        sites = ids[:max_sites]
    sites = list(sites)
    if not sites:
        raise ValueError("no site to draw: no profile id is in every modelled array")
    plt = pyplot()
    import matplotlib.ticker as mticker

    if axes is None:
        _, axes = plt.subplots(1, len(sites), figsize=(3.2 * len(sites), 4.2), sharey=True,
                               layout="constrained", squeeze=False)
        axes = axes[0]
    axes = np.atleast_1d(axes)
    if axes.size < len(sites):
        raise ValueError(f"got {axes.size} axes for {len(sites)} sites")
    z = np.asarray(grid.ZSOI[: grid.N_LAYERS])
    styles = ["-", "--", ":", "-."]
    tables = {}
    for site in sites:
        p = profiles[profiles["profile_id"] == site].sort_values("top")
        if p.empty:
            raise KeyError(f"profile {site!r} is not in profiles")
        tables[site] = p
    deepest = max(float(p["bottom"].max()) for p in tables.values())
    zmax = float(max_depth) if max_depth is not None else max(1.0, 1.5 * deepest)
    shown = z <= zmax * 1.05
    for i, (site, ax) in enumerate(zip(sites, axes.flat)):
        p = tables[site]
        values = [np.asarray(p["soc"], dtype=float)]
        for j, row in enumerate(p.itertuples()):
            ax.plot([row.soc, row.soc], [row.top, row.bottom], color="k", lw=2.5,
                    solid_capstyle="butt", label="observed layers" if j == 0 else None)
        for k, (lab, v) in enumerate(modelled.items()):
            pos = [str(s) for s in v["site"].values].index(str(site))
            prof = np.asarray(v.isel(site=pos).transpose("layer").values, dtype=float)
            if log:  # (near) zero SOC below bedrock: not drawn (a log axis cannot show it)
                prof = np.where(prof > 1e-3 * np.nanmax(prof, initial=0.0), prof, np.nan)
            ax.plot(prof[shown], z[shown], styles[k % len(styles)], color=f"C{k}",
                    marker=".", ms=4, label=lab)
            values.append(prof[shown])
        vals = np.concatenate(values)
        vals = vals[np.isfinite(vals) & ((vals > 0) if log else True)]
        if vals.size:  # limits from what is shown, ignoring near-zero SOC below bedrock
            top = vals.max()
            vals = vals[vals >= 1e-3 * top] if log else vals
            lo, hi = vals.min(), top
            if log:  # every panel on a log axis spanning at least 0.7 decades (labelled)
                span = np.log10(hi / lo)
                if span < 0.7:
                    grow = 10 ** ((0.7 - span) / 2)
                    lo, hi = lo / grow, hi * grow
                ax.set_xscale("log")
                ax.set_xlim(lo / 1.3, hi * 1.3)
                _plain_log_ticks(ax.xaxis, max(span, 0.7), mticker)
            else:
                pad = 0.08 * (hi - lo or hi)
                ax.set_xlim(0.0, hi + pad)
                ax.xaxis.set_major_locator(mticker.MaxNLocator(nbins=3))
                ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set_ylim(zmax, -0.02 * zmax)  # the top layer's bar is not cut by the frame
        ax.set_xlabel(_label("SOC", units))
        where = ""
        if "lat" in p.columns and "lon" in p.columns:
            la, lo_ = float(p["lat"].iloc[0]), float(p["lon"].iloc[0])
            where = (f"\n{abs(la):.1f}°{'N' if la >= 0 else 'S'}, "
                     f"{abs(lo_):.1f}°{'E' if lo_ >= 0 else 'W'}")
        ax.set_title(f"{site}{where}", fontsize="medium")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.set_ylabel("depth (m)")
            ax.legend(fontsize="small", loc="lower left")
    return axes


def _plain_log_ticks(axis: Any, decades: float, mticker: Any) -> None:
    """Log-axis ticks at 1-2-5 (or 1-3, 1) x 10^k, labelled as plain numbers."""
    subs = (1.0, 2.0, 5.0) if decades < 1.2 else (1.0, 3.0) if decades < 2.5 else (1.0,)
    axis.set_major_locator(mticker.LogLocator(base=10.0, subs=subs))
    axis.set_major_formatter(mticker.FuncFormatter(
        lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    axis.set_minor_formatter(mticker.NullFormatter())


def loss_curve(report: Any, *, ax: Any = None) -> Any:
    """Training and validation loss per epoch of a training run.

    Parameters
    ----------
    report : xproda.learning.training.TrainingReport
        From :func:`xproda.learning.training.train_network`.
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        Drawn by :meth:`~xproda.learning.training.TrainingReport.plot` (epoch on x, the loss on a log
        y axis, labelled with the loss definition).
    """
    if not hasattr(report, "plot") or not hasattr(report, "history"):
        raise TypeError(f"report must be a TrainingReport, got {type(report).__name__}")
    pyplot()
    return report.plot(ax=ax)


def sensitivity_bars(result: Any, *, level: float | None = None, ax: Any = None) -> Any:
    """Bar chart of the global stock change per process group (:mod:`xproda.analysis`).

    Parameters
    ----------
    result : xarray.Dataset
        Output of :func:`xproda.analysis.sensitivity` (``relative_change`` ``(group,
        level)``, bars for ``level``; default the largest level, with the matching negative
        level as a second bar if present) or :func:`xproda.analysis.component_control`
        (``variation_loss`` ``(group)``).
    level : float, keyword-only, optional
        Relative perturbation to show (sensitivity results).
    ax : matplotlib axes, keyword-only, optional

    Returns
    -------
    matplotlib axes
    """
    ax = _new_axes(ax, (6.0, 3.5))
    groups = [str(g) for g in result["group"].values]
    x = np.arange(len(groups))
    if "relative_change" in result:
        rc = result["relative_change"]
        lv = float(rc["level"].max()) if level is None else float(level)
        ax.bar(x, np.asarray(rc.sel(level=lv).values), color="#2c7fb8", label=f"{lv:+.0%}")
        if -lv in rc["level"].values:
            ax.bar(x, np.asarray(rc.sel(level=-lv).values), color="#fdae6b",
                   label=f"{-lv:+.0%}")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_ylabel("change of global SOC stock (%)")
        ax.legend(frameon=False, title="group change")
    elif "variation_loss" in result:
        ax.bar(x, np.asarray(result["variation_loss"].values), color="#2c7fb8")
        ax.set_ylabel("loss of explained variation (1 - R²)")
    else:
        raise ValueError("result: expected a sensitivity (relative_change) or component "
                         "control (variation_loss) Dataset, found variables "
                         f"{sorted(map(str, result.data_vars))}")
    ax.set_xticks(x, groups)
    ax.set_xlabel("process group")
    return ax


def importance_bars(result: Any, *, ax: Any = None) -> Any:
    """Horizontal bars of covariate importance (mean ± sd over repeats).

    Parameters
    ----------
    result : xarray.Dataset
        Output of :func:`xproda.analysis.permutation_importance`.
    ax : matplotlib axes, keyword-only, optional

    Returns
    -------
    matplotlib axes
    """
    if "importance_mean" not in result:
        raise ValueError("result: expected a permutation_importance Dataset with "
                         f"'importance_mean', found {sorted(map(str, result.data_vars))}")
    mean = np.asarray(result["importance_mean"].values, dtype=float)
    sd = np.asarray(result["importance_std"].values, dtype=float)
    groups = [str(g) for g in result["group"].values]
    order = np.argsort(mean)
    ax = _new_axes(ax, (5.0, 0.4 * len(groups) + 1.2))
    y = np.arange(len(groups))
    ax.barh(y, mean[order], xerr=sd[order], color="#2c7fb8", capsize=3)
    ax.set_yticks(y, [groups[i] for i in order])
    ax.axvline(0, color="k", lw=0.8)
    metric = result.attrs.get("metric", "skill")
    ax.set_xlabel(f"loss of {metric} ({result.attrs.get('method', 'permute')})")
    return ax

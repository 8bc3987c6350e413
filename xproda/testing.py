"""Testing helpers: synthetic forcing for tests, examples and benchmarks; laziness checks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np

__all__ = [
    "assert_lazy",
    "case_forcing",
    "forcing_dataset",
    "kill_when",
    "raise_if_dask_computes",
    "random_forcing",
    "regions_done",
    "resampled_forcing",
    "twin_profiles",
]


def random_forcing(n: int, seed: int = 0, *, regime: str = "mixed") -> dict[str, np.ndarray]:
    """Physically shaped random forcing for ``n`` columns (numpy, batch first).

    Parameters
    ----------
    n : int
        Number of columns.
    seed : int
        Seed of :func:`numpy.random.default_rng`.
    regime : {"mixed", "bio", "cryo"}
        Active-layer regime: bioturbation (ALT > 2 m), cryoturbation (ALT <= 2 m) or a mix
        including frozen columns.

    Returns
    -------
    dict
        Forcing following :data:`xproda.models.forcing.FORCING_SCHEMA`.
    """
    rng = np.random.default_rng(seed)
    m = np.arange(1, 13)
    j = np.arange(1, 21)
    t_mean = rng.uniform(-8, 25, (n, 1, 1))
    amp = rng.uniform(0, 15, (n, 1, 1))
    tsoi = 273.15 + t_mean + amp * np.sin(2 * np.pi * (m[None, :, None] - 4) / 12) * np.exp(
        -j[None, None, :] / 8
    )
    w = np.clip(rng.uniform(0.2, 0.9, (n, 1, 20)) + 0.1 * np.cos(2 * np.pi * m / 12)[None, :, None], 0, 1)
    o = rng.uniform(0.6, 1.0, (n, 1, 1)) * np.ones((1, 12, 20))
    fpi = rng.uniform(0.3, 1.0, (n, 12, 20))
    if regime == "bio":
        alt = rng.uniform(2.5, 9, (n, 1))
    elif regime == "cryo":
        alt = rng.uniform(0.2, 1.9, (n, 1))
    else:
        alt = rng.choice([0.0, 0.8, 1.5, 5.0, 8.0], size=(n, 1)) * rng.uniform(0.8, 1.2, (n, 1))
    altmax = alt * np.ones((1, 12))
    altmax_ly = np.maximum(alt * rng.uniform(0.9, 1.1, (n, 1)), 0) * np.ones((1, 12))
    nb = rng.integers(3, 21, (n, 1)) * np.ones((1, 12))
    scale = rng.uniform(1, 30, (n, 1))
    season = 1 + 0.3 * np.sin(2 * np.pi * m / 12)[None]
    f = {
        "TSOI": tsoi,
        "W_SCALAR": w,
        "O_SCALAR": o,
        "FPI_vr": fpi,
        "ALTMAX": altmax,
        "ALTMAX_LASTYEAR": altmax_ly,
        "nbedrock": nb,
        "NPP": rng.uniform(1e-7, 1e-5, (n, 12)),
        "CELLSAND": rng.uniform(5, 90, (n, 1)) * np.ones((1, 20)),
        "CWD_INPUT": 0.3 * scale * season,
        "LITR1_INPUT": 1.0 * scale * season,
        "LITR2_INPUT": 1.5 * scale * season,
        "LITR3_INPUT": 0.7 * scale * season,
    }
    return f


def forcing_dataset(
    ny: int = 4,
    nx: int = 6,
    *,
    seed: int = 0,
    chunks: dict | None = None,
    ocean_fraction: float = 0.25,
    regime: str = "mixed",
    crs: str | None = "EPSG:4326",
):
    """A small global lat/lon forcing Dataset built from :func:`random_forcing`.

    Parameters
    ----------
    ny, nx : int
        Grid size (cell-centred global grid, latitudes north to south, longitudes -180..180).
    seed : int
        Random seed.
    chunks : dict, optional
        Dask chunks (e.g. ``{"lat": 2, "lon": 3}``); default numpy-backed.
    ocean_fraction : float
        Fraction of cells set to NaN in every variable (ocean / no data).
    regime : str
        Passed to :func:`random_forcing`.
    crs : str or None
        Written as a ``spatial_ref`` coordinate (needs rioxarray) when given.

    Returns
    -------
    xarray.Dataset
        Forcing variables with dims ``(month, layer, lat, lon)`` / ``(month, lat, lon)``,
        units and long names from the kernel schema, lat/lon with CF attrs and bounds.
    """
    import xarray as xr

    from xproda.models.forcing import FORCING_SCHEMA

    n = ny * nx
    f = random_forcing(n, seed, regime=regime)
    rng = np.random.default_rng(seed + 1)
    ocean = rng.random(n) < ocean_fraction
    dlat, dlon = 180.0 / ny, 360.0 / nx
    lat = 90 - dlat * (np.arange(ny) + 0.5)
    lon = -180 + dlon * (np.arange(nx) + 0.5)
    data_vars = {}
    for k, v in f.items():
        v = v.astype(np.float64).copy()
        v[ocean] = np.nan
        sch = FORCING_SCHEMA[k]
        if v.ndim == 3:
            dims = ("month", "layer", "lat", "lon")
            arr = v.reshape(ny, nx, 12, 20).transpose(2, 3, 0, 1)
        elif sch.shape == (20,):
            dims = ("layer", "lat", "lon")
            arr = v.reshape(ny, nx, 20).transpose(2, 0, 1)
        else:
            dims = ("month", "lat", "lon")
            arr = v.reshape(ny, nx, 12).transpose(2, 0, 1)
        data_vars[k] = (dims, arr, {"units": sch.units, "long_name": sch.long_name})
    ds = xr.Dataset(
        data_vars,
        coords={
            "lat": ("lat", lat, {"standard_name": "latitude", "units": "degrees_north",
                                  "axis": "Y", "bounds": "lat_bounds"}),
            "lon": ("lon", lon, {"standard_name": "longitude", "units": "degrees_east",
                                  "axis": "X", "bounds": "lon_bounds"}),
            "month": ("month", np.arange(1, 13), {"long_name": "month of the year"}),
        },
    )
    ds["lat_bounds"] = (("lat", "bnds"), np.stack([lat + dlat / 2, lat - dlat / 2], -1))
    ds["lon_bounds"] = (("lon", "bnds"), np.stack([lon - dlon / 2, lon + dlon / 2], -1))
    ds = ds.set_coords(["lat_bounds", "lon_bounds"])
    if crs is not None:
        try:
            import rioxarray  # noqa: F401

            ds = ds.rio.write_crs(crs)
        except ImportError:  # pragma: no cover - optional
            pass
    if chunks:
        ds = ds.chunk(chunks)
    return ds


@contextlib.contextmanager
def raise_if_dask_computes(max_computes: int = 0) -> Iterator[None]:
    """Context manager: raise if dask computes more than ``max_computes`` times inside.

    Uses a scheduler that counts calls (as xarray's test helper of the same name), so any
    graph execution — ``.values``, ``.compute()``, ``bool()`` of a lazy array — is caught.
    """
    import dask

    count = {"n": 0}

    def scheduler(dsk, keys, **kwargs):
        count["n"] += 1
        if count["n"] > max_computes:
            raise RuntimeError(
                f"too many dask computations: {count['n']} > {max_computes} (something "
                "computed while the graph was being built)"
            )
        return dask.get(dsk, keys, **kwargs)

    with dask.config.set(scheduler=scheduler):
        yield


def assert_lazy(obj) -> None:
    """Assert every data variable of a Dataset (or a DataArray) is dask-backed."""
    import xarray as xr

    items = obj.data_vars.items() if isinstance(obj, xr.Dataset) else [(obj.name, obj)]
    eager = [str(k) for k, v in items if v.chunks is None]
    if eager:
        raise AssertionError(f"variables are not lazy (numpy-backed): {eager}")


def twin_profiles(
    forcing,
    free: Sequence[str],
    *,
    model="clm5",
    seed: int | np.random.Generator = 0,
    sigma: float = 0.05,
    low: float = 0.25,
    high: float = 0.75,
    top: Sequence[float] = (0.0, 0.1, 0.3, 0.5, 0.8, 1.0),
    bottom: Sequence[float] = (0.1, 0.3, 0.5, 0.8, 1.0, 1.5),
    ids: Sequence[str] | None = None,
    lat=10.0,
    lon=None,
    scale: float = 1.0,
):
    """A twin problem: known parameters and the noisy profiles the model makes from them.

    Parameters
    ----------
    forcing : mapping
        Kernel-layout forcing of ``n`` sites (e.g. :func:`random_forcing`,
        :func:`resampled_forcing`, or :func:`xproda.xr.api.forcing_arrays` of sampled sites).
    free : sequence of str
        Parameters drawn per site, uniform on ``[low, high]`` (normalised); the others 0.5.
    model : str or model
        The model that makes the profiles (default CLM5).
    seed : int or numpy Generator
        Random state: the parameters are drawn first, then the noise.
    sigma : float
        Log-normal noise (standard deviation of log SOC).
    top, bottom : sequence of float
        Layer bounds (m) of every profile; SOC (g C m-3) is the model's at the layer
        midpoints (:class:`~xproda.models.interp.ModelToObs`).
    ids : sequence of str, optional
        Profile ids (default ``p00000``, ...).
    lat, lon : float or array
        Site coordinates (default lon ``s % 360 - 180`` for site ``s``).
    scale : float
        Factor on the model's values (plausible densities for the profile validation).

    Returns
    -------
    truth : ndarray [n, n_params]
        The normalised parameters of every site.
    profiles : pandas.DataFrame
        ``profile_id, lat, lon, top, bottom, soc``; a site whose model SOC is not finite
        (no forcing) gets the profile ``8000 exp(-2 z)`` instead.
    """
    import pandas as pd
    import torch

    from xproda.models import get_model
    from xproda.models.forcing import batch_size
    from xproda.models.interp import ModelToObs

    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    m = get_model(model) if isinstance(model, str) else model
    names = list(m.parameters.names)
    n = batch_size({k: int(np.shape(v)[0]) for k, v in forcing.items() if np.ndim(v)})
    truth = np.full((n, len(names)), 0.5)
    for p in free:
        truth[:, names.index(p)] = rng.uniform(low, high, n)
    soc = m.steady_state(truth, forcing)["soc"]
    top, bottom = np.asarray(top, float), np.asarray(bottom, float)
    depth = np.broadcast_to((top + bottom) / 2, (n, top.size))
    ok = np.isfinite(soc).all(-1)
    obs = ModelToObs(torch.tensor(depth))(torch.tensor(np.nan_to_num(soc, nan=1.0))).numpy()
    obs = obs * np.exp(sigma * rng.standard_normal(obs.shape)) * scale
    obs = np.where(ok[:, None], obs, 8000.0 * np.exp(-2.0 * depth))
    ids = [f"p{s:05d}" for s in range(n)] if ids is None else [str(i) for i in ids]
    lon = np.arange(n) % 360 - 180.0 if lon is None else lon
    lat_s, lon_s = np.broadcast_to(np.asarray(lat, float), (n,)), \
        np.broadcast_to(np.asarray(lon, float), (n,))
    k = top.size
    profiles = pd.DataFrame({
        "profile_id": np.repeat(ids, k), "lat": np.repeat(lat_s, k),
        "lon": np.repeat(lon_s, k), "top": np.tile(top, n), "bottom": np.tile(bottom, n),
        "soc": obs.ravel()})
    return truth, profiles


def regions_done(store) -> int:
    """Regions of a :func:`xproda.io.write_zarr` run marked done so far (-1: no template yet).

    Cheap enough to poll while another process writes (one listing of the progress group).
    """
    from xproda.io.stores import progress_state, target

    template_done, done = progress_state(target(store, None))
    return len(done) if template_done else -1


def kill_when(cmd: Sequence[str], ready: Callable[[], bool], *, timeout: float = 120.0,
              poll: float = 0.02) -> None:
    """Run ``cmd`` in a subprocess and SIGKILL it as soon as ``ready()`` is true.

    For tests of killed-and-resumed runs: e.g. ``kill_when([sys.executable, "-c", code],
    lambda: regions_done(store) >= 2)``.

    Raises
    ------
    AssertionError
        If the process exits by itself first (its stderr tail in the message), ``ready``
        is not true within ``timeout`` seconds, or the kill did not end it.
    """
    import signal
    import subprocess
    import tempfile
    import time

    # stderr to a file, not a pipe: a child that writes more than a pipe holds would block
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                err.seek(0)
                raise AssertionError("the process exited before it was killed: "
                                     + err.read().decode(errors="replace")[-3000:])
            if time.monotonic() > deadline:
                raise AssertionError(f"the process was not ready within {timeout} s")
            time.sleep(poll)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        err.close()
    if proc.returncode != -signal.SIGKILL:
        raise AssertionError(f"the process ended with {proc.returncode}, not by SIGKILL")


#: fixture (MATLAB layout) names -> forcing names, layered [20, 12] and monthly [12]
_FIXTURE_LAYERED = {"tsoi": "TSOI", "w_scalar": "W_SCALAR", "o_scalar": "O_SCALAR",
                    "fpi_vr": "FPI_vr"}
_FIXTURE_MONTHLY = {"altmax": "ALTMAX", "altmax_lastyear": "ALTMAX_LASTYEAR",
                    "nbedrock": "nbedrock", "npp": "NPP", "input_cwd": "CWD_INPUT",
                    "input_litter1": "LITR1_INPUT", "input_litter2": "LITR2_INPUT",
                    "input_litter3": "LITR3_INPUT"}


def case_forcing(case: dict) -> dict[str, np.ndarray]:
    """One reference case's forcing (as stored in ``reference_*.json``) in the kernel layout.

    The fixtures store the original code's layout (``[20, 12]`` layered, ``[12]`` monthly);
    this returns ``[1, 12, 20]`` / ``[1, 12]`` float64 arrays and ``CELLSAND`` ``[1, 20]``
    (the annual mean sand content, %).
    """
    f = case["forcing"]
    out = {v: np.asarray(f[k], dtype=float).T[None] for k, v in _FIXTURE_LAYERED.items()}
    out.update({v: np.asarray(f[k], dtype=float)[None] for k, v in _FIXTURE_MONTHLY.items()})
    out["CELLSAND"] = np.asarray(f["sand"], dtype=float).mean(axis=1)[None]
    return out


def resampled_forcing(cases, n: int, seed: int = 0, *, layout: str = "C",
                      dtype=np.float64) -> dict[str, np.ndarray]:
    """Realistic forcing for ``n`` columns resampled from reference cases (benchmarks, tests).

    Each column copies one case, drawn in turn so that every regime of the fixtures appears
    (bioturbation, cryoturbation, frozen, shallow bedrock), and perturbs it as neighbouring
    grid cells differ: soil temperature shifted by up to +-1.5 K, the water scalar scaled by
    0.9-1.1 (clipped to 1), litter inputs scaled by 0.5-2. Active layer and bedrock are kept,
    so each column stays in its case's regime.

    Parameters
    ----------
    cases : sequence of dict
        The ``"cases"`` of a reference fixture (e.g. ``reference_clm5_cen.json``).
    n : int
        Number of columns.
    seed : int
        Random seed.
    layout : {"C", "transposed"}
        ``"C"``: C-contiguous ``[n, 12, 20]`` arrays. ``"transposed"``: the layered variables
        are stored ``[n, 20, 12]`` (layers before months) and returned as transposed views
        ``[n, 12, 20]``, as a user who slices such data passes them.
    dtype : numpy dtype
        float64 or float32 (as read from a float32 store).

    Returns
    -------
    dict
        Forcing following :data:`xproda.models.forcing.FORCING_SCHEMA`.
    """
    if layout not in ("C", "transposed"):
        raise ValueError(f"layout must be 'C' or 'transposed', got {layout!r}")
    base = [case_forcing(c) for c in cases]
    if not base:
        raise ValueError("resampled_forcing needs at least one case")
    rng = np.random.default_rng(seed)
    pick = (np.arange(n) + rng.integers(0, len(base))) % len(base)
    rng.shuffle(pick)
    f = {k: np.concatenate([b[k] for b in base])[pick] for k in base[0]}
    f["TSOI"] = f["TSOI"] + rng.uniform(-1.5, 1.5, (n, 1, 1))
    f["W_SCALAR"] = np.clip(f["W_SCALAR"] * rng.uniform(0.9, 1.1, (n, 1, 1)), 0.0, 1.0)
    scale = rng.uniform(0.5, 2.0, (n, 1))
    for k in ("CWD_INPUT", "LITR1_INPUT", "LITR2_INPUT", "LITR3_INPUT", "NPP"):
        f[k] = f[k] * scale
    out = {}
    for k, v in f.items():
        # C: really C-contiguous (the fixtures' [20, 12] cases are transposed views, and
        # concatenation, indexing and arithmetic keep their strides)
        v = np.ascontiguousarray(v, dtype=dtype)
        if layout == "transposed" and v.ndim == 3:
            v = np.ascontiguousarray(v.transpose(0, 2, 1)).transpose(0, 2, 1)
        out[k] = v
    return out

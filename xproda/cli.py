"""The ``xproda`` command line.

``xproda demo`` runs the whole pipeline on the embedded synthetic world (build the world, write
it as Zarr, simulate profiles, train a parameter network end to end, predict parameters and
run the model globally and lazily, write Zarr results, figures and a summary;
:func:`xproda.demo.run_demo`)::

    xproda demo --out demo_output               # 2 degrees, about 2-3 minutes on 2 CPU cores
    xproda demo --resolution 4 --epochs 10 --no-figures

``xproda run`` streams a global steady-state run from input stores to a Zarr store, region by
region, resumably::

    xproda run --forcing forcing.zarr --params theta.zarr --out result.zarr
    xproda run --forcing s3://bucket/forcing.zarr --params theta.nc --out s3://bucket/out.zarr \\
        --storage-options '{"endpoint_url": "http://localhost:9000"}' --resume
    xproda run ... --scheduler tcp://scheduler:8786      # a dask.distributed cluster

``xproda assimilate`` fits the model to soil profiles site by site, in shards on the dask
scheduler, into a resumable Zarr store; ``xproda train`` trains a parameter network::

    xproda assimilate --profiles profiles.csv --forcing forcing.zarr --out post.zarr \
        --method map --scheduler local-cluster --workers 4 [--resume]
    xproda train --profiles profiles.csv --covariates covariates.zarr --out net.safetensors

Every option has a ``--help`` text; ``xproda run --help`` lists them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Sequence

__all__ = ["main", "build_run", "read_profiles", "site_forcing"]


def _parse_chunks(text: str | None) -> dict[str, int]:
    """``--chunks lat=90,lon=180`` as ``{"lat": 90, "lon": 180}`` (an argparse type)."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        try:
            size = int(v)
        except ValueError:
            size = 0
        if not sep or not k.strip() or size < 1:
            raise argparse.ArgumentTypeError(
                f"expected dim=size[,dim=size] with sizes >= 1, got {text!r}")
        out[k.strip()] = size
    return out


def _parse_json_dict(text: str) -> dict[str, Any]:
    """``--storage-options '{"anon": true}'`` as a dict (an argparse type)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err.msg} at position {err.pos}): "
                                         f"{text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object ({{...}}), got {text!r}")
    return value


_LOCAL_SCHEDULERS = ("threads", "synchronous", "processes", "local-cluster")


_SCHEDULER_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")


def _parse_scheduler(text: str) -> str:
    """A local scheduler name or the address of a dask.distributed scheduler (argparse type).

    Addresses: ``[scheme://]host:port`` with a scheme of :data:`_SCHEDULER_SCHEMES` (default
    tcp) and a port in 1-65535; ``inproc://...`` as given.
    """
    if text in _LOCAL_SCHEDULERS:
        return text
    forms = (f"one of {', '.join(_LOCAL_SCHEDULERS)}, or a scheduler address "
             f"[{'|'.join(_SCHEDULER_SCHEMES)}://]host:port such as tcp://10.0.0.5:8786")
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text
    if scheme not in _SCHEDULER_SCHEMES:
        raise argparse.ArgumentTypeError(f"unknown scheme {scheme!r} in {text!r}; expected {forms}")
    if scheme == "inproc":
        return text
    host, colon, port = rest.rpartition(":")
    if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected {forms}, got {text!r}")
    return f"{scheme}://{host}:{port}"


def _parse_depth(text: str) -> tuple[float, float]:
    """``--depth 0-0.3`` as ``(0.0, 0.3)`` m (an argparse type)."""
    a, sep, b = text.partition("-")
    try:
        top, bottom = float(a), float(b)
    except ValueError:
        top = bottom = float("nan")
    if not sep or not (0 <= top < bottom):
        raise argparse.ArgumentTypeError(
            f"expected TOP-BOTTOM in m with 0 <= TOP < BOTTOM (e.g. 0-0.3), got {text!r}")
    return top, bottom


def _load_net(path: str, storage_options: dict | None):
    """A network checkpoint from a path or an fsspec URL (safetensors; never pickle)."""
    from xproda.learning.network import load_network

    if "://" not in str(path):
        return load_network(path)
    import tempfile

    import fsspec

    from xproda.errors import CheckpointError

    with fsspec.open(path, "rb", **(storage_options or {})) as fh, \
            tempfile.NamedTemporaryFile(suffix=".safetensors") as tmp:
        tmp.write(fh.read())
        tmp.flush()
        try:
            return load_network(tmp.name)
        except CheckpointError as err:  # name the URL, not the local copy
            raise CheckpointError(str(err).replace(tmp.name, str(path))) from None


def build_run(
    forcing,
    params=None,
    *,
    network=None,
    covariates=None,
    model: str | None = None,
    reference: bool = False,
    pools: bool = False,
    depths: Sequence[tuple[float, float]] = (),
    chunks: dict | None = None,
    storage_options: dict | None = None,
):
    """Open inputs and build the lazy result Dataset and land mask of a run.

    Parameters
    ----------
    forcing, params : str or Dataset
        Paths/URLs (opened lazily with :func:`xproda.io.open_dataset`) or Datasets.
        ``params``: a ``theta`` variable with a ``parameter`` dim, or one variable per
        parameter (normalised).
    network : str or ParameterNet, optional
        Instead of ``params``: a trained network (checkpoint path/URL or object); parameters
        are predicted lazily from ``covariates`` (an ensemble adds a ``member`` dim).
    covariates : str or Dataset, optional
        Covariates of ``network`` (default: variables of the forcing store).
    model : str, optional
        Default: the network's model, else ``"clm5"``.
    reference, pools
        As for :func:`xproda.xr.api.steady_state`.
    depths : sequence of (top, bottom)
        Extra stock variables ``soc_stock_<top>_<bottom>m`` (kg m-2).
    chunks : dict, optional
        Spatial chunks of the run (default: the forcing store's chunks).
    storage_options : dict, optional
        fsspec options for every URL.

    Returns
    -------
    (Dataset, DataArray)
        The lazy result and the boolean land mask (cells with forcing data).
    """
    import numpy as np
    import xarray as xr

    from xproda import io
    from xproda.xr import api as xr_api

    so = storage_options or None
    if (params is None) == (network is None):
        raise ValueError("give exactly one of params (a parameter store) and network (a "
                         "trained network checkpoint)")
    ds = io.open_dataset(forcing, storage_options=so)
    if chunks:
        unknown = [k for k in chunks if k not in ds.dims]
        if unknown:
            from xproda.errors import DimensionError

            raise DimensionError(f"chunks: no dim(s) {unknown} in the forcing store {forcing!r}; "
                                 f"its dims are {sorted(map(str, ds.dims))}")
        ds = ds.chunk(dict(chunks))
    if network is not None:
        net = _load_net(network, so) if isinstance(network, (str, os.PathLike)) else network
        cov = ds if covariates is None else io.open_dataset(covariates, storage_options=so)
        if chunks and cov is not ds:
            cov = cov.chunk({k: v for k, v in chunks.items() if k in cov.dims})
        pr = xr_api.predict_parameters(cov, net)
        model = model or getattr(net, "model_name", None)
    else:
        pr = io.open_dataset(params, storage_options=so)
        if isinstance(pr, xr.Dataset) and "theta" in pr.data_vars:
            pr = pr["theta"]
    model = model or "clm5"
    out = xr_api.steady_state(ds, pr, model=model, reference=reference, pools=pools)
    for top, bottom in depths:
        out[f"soc_stock_{top:g}_{bottom:g}m"] = xr_api.soc_stock(out, depth=(top, bottom))
    # land mask from the cheapest forcing variable (no layer dim): cells with any data
    name = min(("nbedrock", "ALTMAX", "CWD_INPUT"),
               key=lambda k: ds[k].size if k in ds else np.inf)
    v = ds[name]
    mask = v.notnull().any("month") if "month" in v.dims else v.notnull()
    mask = mask.drop_vars([c for c in mask.coords if c not in mask.dims])
    return out, mask


def run_inputs(args: argparse.Namespace, *, network: Any = None) -> dict[str, Any]:
    """What ``xproda run`` reads, by name, for the fingerprint of its output store.

    The input stores by the digest of their bytes (:func:`xproda.io.digest.content_digest`:
    compressed chunks are hashed without decoding, cheap beside the run), the network by its
    content hash. ``--resume`` then refuses a store started with other inputs, naming them,
    instead of finishing it with regions of two runs. The model, mode, depths and pools enter
    the fingerprint through the result itself.
    """
    return {"forcing": args.forcing, "params": args.params, "covariates": args.covariates,
            "network": network}


def scheduler_options(p: argparse.ArgumentParser) -> None:
    """``--scheduler``, ``--workers`` and ``--torch-threads`` (read by
    :func:`_scheduler_context`) of the commands that run on dask."""
    p.add_argument("--scheduler", default=None, type=_parse_scheduler,
                   help="threads (default), synchronous, processes, local-cluster, or the "
                        "address of a dask.distributed scheduler")
    p.add_argument("--workers", type=int, default=2, help="workers of --scheduler local-cluster")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch threads per task/worker (xproda.set_options)")


def _scheduler_context(args: argparse.Namespace):
    """The dask context of ``--scheduler`` (and ``--workers``): a client for a cluster, or
    the local scheduler's config."""
    import contextlib

    import dask

    stack = contextlib.ExitStack()
    if args.scheduler and args.scheduler not in ("threads", "synchronous", "processes"):
        from distributed import Client

        from xproda.options import local_cluster

        if args.scheduler == "local-cluster":  # workers tuned (dask_worker_config)
            cluster = stack.enter_context(local_cluster(args.workers, dashboard_address=None))
            stack.enter_context(Client(cluster))
        else:
            stack.enter_context(Client(args.scheduler))
    elif args.scheduler:
        stack.enter_context(dask.config.set(scheduler=args.scheduler))
    return stack


def _cmd_run(args: argparse.Namespace) -> int:
    from xproda import io, set_options, tune_malloc

    if not args.no_tune_malloc:
        tune_malloc()
    so = args.storage_options or None
    # loaded once: the run and the digest of its inputs use the same network
    net = None if args.network is None else _load_net(args.network, so)
    t0 = time.perf_counter()
    with _scheduler_context(args), set_options(torch_threads=args.torch_threads):
        out, mask = build_run(
            args.forcing, args.params, network=net, covariates=args.covariates,
            model=args.model, reference=args.reference,
            pools=args.pools, depths=args.depth or (),
            chunks=args.chunks, storage_options=so,
        )
        try:
            report = io.write_zarr(
                out, args.out, storage_options=so, mask=mask, resume=args.resume,
                overwrite=args.overwrite, progress=not args.quiet,
                inputs=run_inputs(args, network=net), verify=args.verify,
            )
        except FileExistsError:  # write_zarr's message names its keywords, not the options
            raise FileExistsError(
                f"the output store {args.out!r} already exists; pass --resume to "
                "finish an interrupted run into it, or --overwrite to replace it") from None
    if not args.quiet:
        print(report)
        print(f"done in {time.perf_counter() - t0:.1f} s -> {args.out}")
    return 0


def _parse_units(text: str) -> dict[str, str]:
    """``--units soc=g/kg,top=cm`` as a dict (an argparse type)."""
    out = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        if not sep or not k.strip() or not v.strip():
            raise argparse.ArgumentTypeError(
                f"expected column=unit[,column=unit] (e.g. soc=g/kg,top=cm), got {text!r}")
        out[k.strip()] = v.strip()
    return out


def _parse_names(text: str) -> list[str]:
    """``--free q10,beta`` as a list (an argparse type)."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected NAME[,NAME...], got {text!r}")
    return names


def read_profiles(path: str, *, units: dict | None = None, quiet: bool = False):
    """A profile table (CSV, one row per layer) as a validated :class:`ProfileBatch`.

    Through :func:`xproda.sites.observations.from_table` (unit conversion, cleaning; the
    cleaning report is printed unless ``quiet``).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"--profiles: no file {path!r}")
    from xproda.sites.observations import as_profile_batch, from_table

    df, report = from_table(path, units=units)
    if not quiet and report is not None:
        print(report, file=sys.stderr)
    return as_profile_batch(df, where=f"--profiles {path}")


def site_forcing(forcing: str, batch, storage_options: dict | None):
    """Forcing at the profiles' sites: a store with a ``site`` dim as it is (matched by id),
    a gridded one sampled at the sites (nearest cell)."""
    from xproda import io
    from xproda.spatial import sample_sites

    ds = io.open_dataset(forcing, storage_options=storage_options)
    if "site" in ds.dims:
        return ds
    return sample_sites(ds, lat=batch.lat, lon=batch.lon, ids=batch.site_ids).load()


def _cmd_assimilate(args: argparse.Namespace) -> int:
    from xproda import set_options
    from xproda.sites.assimilation.problem import assimilate

    so = args.storage_options or None
    batch = read_profiles(args.profiles, units=args.units, quiet=args.quiet)
    t0 = time.perf_counter()
    with _scheduler_context(args), set_options(torch_threads=args.torch_threads):
        forcing = site_forcing(args.forcing, batch, so)
        kw = dict(model=args.model, method=args.method, free=args.free, seed=args.seed,
                  progress=not args.quiet)
        for k in ("n_iter", "n_chains", "n_starts", "likelihood"):
            if getattr(args, k) is not None:
                kw[k] = getattr(args, k)
        if args.method == "batch":  # one parameter set: in-process, then written
            from xproda import io

            if args.resume:
                raise ValueError("--resume: batch mode is one optimisation, not shards; "
                                 "rerun it (with --overwrite)")
            ds = assimilate(batch, forcing, **kw)
            try:
                io.write_zarr(ds, args.out, storage_options=so, overwrite=args.overwrite,
                              progress=False)
            except FileExistsError:
                raise FileExistsError(f"the output store {args.out!r} already exists; pass "
                                      "--overwrite to replace it") from None
        else:
            try:
                ds = assimilate(batch, forcing, store=args.out, storage_options=so,
                                shard_size=args.shard_size, resume=args.resume,
                                overwrite=args.overwrite, **kw)
            except FileExistsError:
                raise FileExistsError(
                    f"the output store {args.out!r} already exists; pass --resume to finish "
                    "an interrupted run into it, or --overwrite to replace it") from None
    if not args.quiet:
        n = ds.sizes.get("site", 1)
        print(f"assimilated {n} site(s) ({args.method}) in {time.perf_counter() - t0:.1f} s "
              f"-> {args.out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from xproda import io, set_options
    from xproda.learning.data import prepare_training_data
    from xproda.learning.trainer import train_network
    from xproda.learning.network import save_network

    so = args.storage_options or None
    if os.path.exists(args.out) and not args.overwrite:
        raise FileExistsError(f"the output file {args.out!r} already exists; pass --overwrite "
                              "to replace it")
    batch = read_profiles(args.profiles, units=args.units, quiet=args.quiet)
    cov = io.open_dataset(args.covariates, storage_options=so)
    forcing = io.open_dataset(args.forcing, storage_options=so) if args.forcing else None
    da = io.open_dataset(args.assimilation, storage_options=so).load() \
        if args.assimilation else None
    t0 = time.perf_counter()
    with _scheduler_context(args), set_options(torch_threads=args.torch_threads):
        data = prepare_training_data(cov, batch, forcing=forcing, model=args.model)
        net, report = train_network(data, method=args.method, assimilation=da,
                                    epochs=args.epochs, seed=args.seed,
                                    progress=not args.quiet)
    path = save_network(net, args.out)
    if not args.quiet:
        print(report)
        print(f"trained in {time.perf_counter() - t0:.1f} s -> {path}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from xproda.io.integrity import verify

    report = verify(args.store, storage_options=args.storage_options or None,
                    checksums=not args.quick)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        print(report)
        if not report.ok:
            print(f"repair: rerun the same command with --resume (xproda run), or the same "
                  f"write with resume=True: only the {len(report.bad_regions)} damaged "
                  "region(s) are rewritten")
    return 0 if report.ok else 1


def _user_error(err: BaseException) -> str | None:
    """One line for an error caused by the input or the environment; None for a bug."""
    from xproda.errors import XprodaError

    if isinstance(err, (XprodaError, OSError, ValueError, KeyError, TypeError, ImportError)):
        msg = str(err)
        if isinstance(err, KeyError) and err.args and isinstance(err.args[0], str):
            msg = err.args[0] if " " in err.args[0] else f"missing {err.args[0]!r}"
        return f"{type(err).__name__}: {msg}".replace("\n", " ")
    return None


def _cmd_demo(args: argparse.Namespace) -> int:
    from xproda.demo import run_demo

    summary = run_demo(args.out, resolution=args.resolution, n_sites=args.n_sites,
                       epochs=args.epochs, seed=args.seed, figures=not args.no_figures,
                       progress=not args.quiet)
    if args.quiet:
        g = summary["global_soc_pg"]["predicted"]
        print(f"global SOC 0-1 m: {g['0-100cm']:,.0f} Pg C; held-out R2: "
              f"{summary['held_out']['r2']:.3f}; {summary['timings_s']['total']:.0f} s "
              f"-> {args.out}")
    else:
        print(f"outputs in {args.out}: {', '.join(summary['outputs'])}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xproda`` command."""
    from xproda import __version__

    ap = argparse.ArgumentParser(
        prog="xproda", description="PRODA soil-carbon modelling",
        epilog="Errors print one line and exit with status 1 (2 for bad options); --debug "
               "shows the traceback.")
    ap.add_argument("--version", action="version", version=f"xproda {__version__}")
    ap.add_argument("--debug", action="store_true",
                    help="show the Python traceback of an error (for bug reports)")
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="steady-state run of a gridded forcing, Zarr to Zarr")
    run.add_argument("--forcing", required=True, help="forcing store (Zarr/NetCDF, path or URL)")
    src = run.add_mutually_exclusive_group(required=True)
    src.add_argument("--network", help="trained parameter network (safetensors checkpoint; "
                     "parameters predicted from --covariates)")
    run.add_argument("--covariates", help="covariate store of --network (default: the forcing "
                     "store)")
    src.add_argument("--params",
                     help="normalised parameters: store with 'theta' (parameter dim) or one "
                          "variable per parameter")
    run.add_argument("--out", required=True, help="output Zarr store (path or URL)")
    run.add_argument("--model", default=None, choices=["clm5", "microbial"],
                     help="default: the network's model, else clm5")
    run.add_argument("--reference", action="store_true",
                     help="reproduce the original PRODA code (see docs/corrections.md)")
    run.add_argument("--pools", action="store_true", help="also write every pool")
    run.add_argument("--depth", action="append", metavar="TOP-BOTTOM", type=_parse_depth,
                     help="extra stock of a depth interval in m, e.g. 0-0.3 (repeatable)")
    run.add_argument("--chunks", type=_parse_chunks, default=None,
                     help="spatial chunks, e.g. lat=90,lon=180 (default: store's)")
    run.add_argument("--resume", action="store_true",
                     help="finish an interrupted run into the same --out store")
    run.add_argument("--overwrite", action="store_true", help="replace an existing --out store")
    run.add_argument("--verify", action="store_true",
                     help="with --resume: compare the digest of every chunk already written "
                          "(reads the store) and rewrite altered ones; without it, missing and "
                          "truncated chunks are found and rewritten")
    scheduler_options(run)
    run.add_argument("--no-tune-malloc", action="store_true",
                     help="leave glibc's allocator as it is (default: xproda.tune_malloc, "
                          "less system time re-faulting freed memory)")
    run.add_argument("--storage-options", default=None, type=_parse_json_dict,
                     help="JSON dict of fsspec storage options for every URL")
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    def shared(p, *, store_help: str) -> None:
        p.add_argument("--profiles", required=True,
                       help="profile table, CSV with one row per layer: profile_id, lat, lon, "
                            "top, bottom (m), soc (g C m-3), or other units with --units")
        p.add_argument("--units", type=_parse_units, default=None,
                       help="units of the table's columns, e.g. soc=g/kg,top=cm,bottom=cm "
                            "(xproda.sites.observations.from_table)")
        p.add_argument("--out", required=True, help=store_help)
        p.add_argument("--model", default="clm5", choices=["clm5", "microbial"])
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
        scheduler_options(p)
        p.add_argument("--storage-options", default=None, type=_parse_json_dict,
                       help="JSON dict of fsspec storage options for every URL")
        p.add_argument("--quiet", action="store_true", help="no progress or summary")

    asm = sub.add_parser(
        "assimilate", help="site-level data assimilation of soil profiles, to a Zarr store",
        description="Fit the model's parameters to each soil profile (posterior samples or "
                    "MAP per site; batch mode: one set for all) and write the result to a "
                    "Zarr store, shard by shard on the dask scheduler; --resume finishes a "
                    "killed run without redoing finished shards.")
    shared(asm, store_help="output Zarr store (path or URL)")
    asm.add_argument("--forcing", required=True,
                     help="forcing store (Zarr/NetCDF): gridded (sampled at the sites) or with "
                          "a site dim matching the profile ids")
    asm.add_argument("--method", default="am", choices=["am", "map", "reference", "batch"])
    asm.add_argument("--likelihood", default=None, choices=["cen", "mic", "gaussian"])
    asm.add_argument("--free", type=_parse_names, default=None,
                     help="parameters to estimate, comma-separated (default: all)")
    asm.add_argument("--n-iter", type=int, default=None, help="iterations per chain (am)")
    asm.add_argument("--n-chains", type=int, default=None, help="chains per site (am)")
    asm.add_argument("--n-starts", type=int, default=None, help="starts per site (map)")
    asm.add_argument("--shard-size", type=int, default=None,
                     help="sites per shard (default: about 4 shards per worker thread, at "
                          "most 500; results do not depend on it)")
    asm.add_argument("--resume", action="store_true",
                     help="finish an interrupted run into the same --out store")
    trn = sub.add_parser(
        "train", help="train a parameter network on soil profiles, to a safetensors file",
        description="Sample covariates and forcing at the profiles' sites, train a network "
                    "mapping covariates to model parameters (end to end through the model, "
                    "or two-step from site-level assimilation) and save it (safetensors).")
    shared(trn, store_help="output network file (.safetensors)")
    trn.add_argument("--covariates", required=True, help="gridded covariate store")
    trn.add_argument("--forcing", default=None,
                     help="gridded forcing store (default: variables of --covariates)")
    trn.add_argument("--method", default="end_to_end", choices=["end_to_end", "two_step"])
    trn.add_argument("--assimilation", default=None,
                     help="two_step: a store written by 'xproda assimilate' (default: run the "
                          "assimilation first)")
    trn.add_argument("--epochs", type=int, default=300)
    from xproda.demo import DEMO_DEFAULTS

    demo = sub.add_parser(
        "demo", help="end-to-end demo on the embedded synthetic world (train, run, figures)",
        description="Build the synthetic world, write it as Zarr, simulate soil profiles, "
                    "train a parameter network end to end through the CLM5 model, predict "
                    "parameters and run the model globally (lazily, written to Zarr), and "
                    "write figures and a summary (summary.json, summary.md) to --out.")
    demo.add_argument("--out", default="demo_output",
                      help="output directory (default: demo_output)")
    demo.add_argument("--resolution", type=float, default=DEMO_DEFAULTS["resolution"],
                      help="grid spacing in degrees (default: %(default)s)")
    demo.add_argument("--n-sites", type=int, default=DEMO_DEFAULTS["n_sites"],
                      help="simulated soil profiles, training + held out (default: "
                           "%(default)s)")
    demo.add_argument("--epochs", type=int, default=DEMO_DEFAULTS["epochs"],
                      help="maximum training epochs (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=DEMO_DEFAULTS["seed"],
                      help="seed of the world, truth, profiles and training (default: "
                           "%(default)s)")
    demo.add_argument("--no-figures", action="store_true",
                      help="skip the PNG figures (no matplotlib needed)")
    demo.add_argument("--quiet", action="store_true", help="no progress output")

    ver = sub.add_parser(
        "verify", help="check a store written by xproda: every chunk present and intact",
        description="Compare a store with the manifest its writer recorded (size and digest "
                    "of every chunk and metadata object); report the damaged regions, which "
                    "'xproda run --resume' (or resume=True) rewrites. Exit status 0 when "
                    "intact, 1 when damaged.")
    ver.add_argument("store", help="store path or URL")
    ver.add_argument("--quick", action="store_true",
                     help="presence and sizes only (one listing), no digests")
    ver.add_argument("--json", action="store_true", help="the report as JSON")
    ver.add_argument("--storage-options", default=None, type=_parse_json_dict,
                     help="JSON dict of fsspec storage options")
    args = ap.parse_args(argv)
    commands = {"run": _cmd_run, "demo": _cmd_demo, "verify": _cmd_verify,
                "assimilate": _cmd_assimilate, "train": _cmd_train}
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print(f"xproda {args.command}: interrupted", file=sys.stderr)
        if args.command in ("run", "assimilate"):
            print(f"xproda {args.command}: rerun the same command with --resume to finish it",
                  file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        line = _user_error(err)
        if line is None:
            line = (f"internal error {type(err).__name__}: {err} -- this is a bug; rerun "
                    "with --debug and report the traceback")
        print(f"xproda {args.command}: error: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

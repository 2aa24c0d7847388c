"""``iclwb sweep run|status|results``: the command line of scripted sweeps."""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_STORE = "results/sweeps"


def _store_dir(args: argparse.Namespace, cfg=None) -> str:
    if getattr(args, "store", None):
        return args.store
    if cfg is not None and cfg.store:
        return cfg.store
    if cfg is not None:
        return os.path.join("results", cfg.name)
    return DEFAULT_STORE


def _cmd_run(args: argparse.Namespace) -> int:
    from experiments.sweep.config import load_config
    from experiments.sweep.executors import run_sweep

    cfg = load_config(args.config)  # validates everything before any work starts
    units = cfg.units()
    store = _store_dir(args, cfg)
    workers = args.workers or (os.cpu_count() or 1)
    print(f"sweep {cfg.name!r} (config {cfg.config_hash}): {len(units)} units -> {store} "
          f"[{args.executor}, {workers} worker{'s' if workers > 1 else ''}]", file=sys.stderr)
    report = run_sweep(cfg, store, executor=args.executor, workers=workers, address=args.address,
                       progress=not args.quiet)
    print(report.summary())
    return 0 if report.ok else 1


def _cmd_status(args: argparse.Namespace) -> int:
    from experiments.sweep.store import ResultsStore

    cfg = None
    if args.config:
        from experiments.sweep.config import load_config

        cfg = load_config(args.config)
    store = ResultsStore(_store_dir(args, cfg), create=False)
    done = store.finished_keys()
    running = store.running()
    errors = store.errors()
    print(f"store {store.root}: {len(done)} finished units, {len(running)} running, "
          f"{len(errors)} failed")
    sweeps = [cfg] if cfg else None
    if sweeps:
        units = cfg.units()
        miss = [u for u in units if u.key not in done]
        print(f"sweep {cfg.name!r} ({cfg.config_hash}): {len(units) - len(miss)}/{len(units)} done, "
              f"{sum(u.key in running for u in miss)} running, {sum(u.key in errors for u in miss)} failed, "
              f"{sum(u.key not in running and u.key not in errors for u in miss)} not started")
        for u in miss[: args.show]:
            state = "running" if u.key in running else "failed" if u.key in errors else "missing"
            print(f"  {state:8s} {u.key}  {u.label()}")
    else:
        for info in store.sweeps():
            keys = info.get("units", [])
            print(f"  sweep {info['name']!r} ({info['config_hash']}): "
                  f"{sum(k in done for k in keys)}/{len(keys)} done")
    for key, info in list(errors.items())[: args.show]:
        print(f"  failed {key}: {info.get('error', '')[:160]}")
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    import pandas as pd

    from experiments.sweep.store import ResultsStore, StoreError

    store = ResultsStore(args.store or "results/demo", create=False)
    if not store.finished_keys():
        raise StoreError(f"results store {store.root} has no finished units yet")
    if args.sql:
        df = store.sql(args.sql)
    else:
        filters = {"model": args.model, "task": args.task, "k": args.k, "analysis": args.analysis,
                   "metric": args.metric, "seed": args.seed}
        df = store.frame(**{c: v for c, v in filters.items() if v})
    if args.export:
        if args.export.endswith(".parquet"):
            df.to_parquet(args.export, index=False)
        elif args.export.endswith(".csv"):
            df.to_csv(args.export, index=False)
        else:
            raise StoreError(f"--export {args.export!r}: use a file name ending in .csv or .parquet")
        print(f"wrote {len(df)} rows to {args.export}")
        return 0
    if df.empty:
        print("no rows match")
        return 0
    if not args.sql and not args.all_columns:
        dims = [c for c in ("analysis", "model", "task", "k", "seed", "metric", "step", "condition",
                            "layer", "head", "value") if c in df.columns]
        df = df[dims]
    with pd.option_context("display.max_rows", args.limit, "display.max_columns", 30, "display.width", 160):
        print(df.head(args.limit).to_string(index=False))
    if len(df) > args.limit:
        print(f"... {len(df)} rows in all (use --limit N, --export FILE.csv)")
    return 0


def _guard(fn):
    """Print a store problem as one line (exit 2) instead of a traceback."""
    def wrapped(args: argparse.Namespace) -> int:
        from experiments.sweep.store import StoreError

        try:
            return fn(args)
        except StoreError as err:
            print(f"iclwb: error: {err}", file=sys.stderr)
            return 2
    return wrapped


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("sweep", help="scripted sweeps into a results store").add_subparsers(
        dest="sweep_cmd", required=True)
    r = sp.add_parser("run", help="run a sweep config (resumable: only missing units are computed)")
    r.add_argument("config", help="TOML sweep config (see configs/example.toml)")
    r.add_argument("--store", help="results folder (default: the config's 'store', else results/NAME)")
    r.add_argument("--executor", choices=["local", "ray"], default="local")
    r.add_argument("--workers", type=int, default=None,
                   help="parallel workers (default: the CPU count; 1 runs in this process)")
    r.add_argument("--address", default=None, help="Ray cluster address (with --executor ray)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=_guard(_cmd_run))

    s = sp.add_parser("status", help="what a store (or a config's sweep) has done, running or failed")
    s.add_argument("config", nargs="?", help="a sweep config: report its units")
    s.add_argument("--store", help=f"results folder (default: the config's, else {DEFAULT_STORE})")
    s.add_argument("--show", type=int, default=10, help="list this many missing/failed units")
    s.set_defaults(func=_guard(_cmd_status))

    q = sp.add_parser("results", help="the stored results as a table (filter, export)")
    q.add_argument("--store", default=None, help="results folder (default results/demo)")
    q.add_argument("--model")
    q.add_argument("--task")
    q.add_argument("--k", type=int)
    q.add_argument("--seed", type=int)
    q.add_argument("--analysis")
    q.add_argument("--metric")
    q.add_argument("--sql", help="SQL over the view 'results', e.g. \"SELECT model, avg(value) FROM results GROUP BY model\"")
    q.add_argument("--export", help="write the rows to FILE.csv or FILE.parquet")
    q.add_argument("--limit", type=int, default=40)
    q.add_argument("--all-columns", action="store_true", help="include the provenance columns")
    q.set_defaults(func=_guard(_cmd_results))

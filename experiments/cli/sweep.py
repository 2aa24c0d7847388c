"""``iclwb sweep run|status|unlock|results|prune``: the command line of scripted sweeps."""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter

# Handlers import the runner when they run (see experiments/cli/main.py: start-up time).

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
    from experiments.runs.config import load_config
    from experiments.runs.executors import run_sweep

    cfg = load_config(args.config)  # validates everything before any work starts
    units = cfg.units()
    store = _store_dir(args, cfg)
    for line in _power_preflight(units, store):
        print(f"iclwb: power: {line}", file=sys.stderr)
    workers = args.workers or (os.cpu_count() or 1)
    print(f"sweep {cfg.name!r} (config {cfg.config_hash}): {len(units)} units -> {store} "
          f"[{args.executor}, {workers} worker{'s' if workers > 1 else ''}]", file=sys.stderr)
    report = run_sweep(cfg, store, executor=args.executor, workers=workers, address=args.address,
                       progress=not args.quiet)
    print(report.summary())
    return 0 if report.ok else 1


def _power_preflight(units, store: str) -> list[str]:
    """``experiments.runs.power.preflight`` on the units of a sweep, with the store's pilots."""
    from experiments.runs.power import preflight
    from experiments.runs.store import ResultsStore

    frame = ResultsStore(store, create=False).frame() if os.path.isdir(os.path.join(store, "units")) else None
    return preflight(units, frame)


def _counts(states) -> str:

    return "; ".join(f"{why} ({n})" for why, n in Counter(states).most_common())


def _cmd_status(args: argparse.Namespace) -> int:
    from experiments.runs.config import load_config
    from experiments.runs.executors import expected_provenance, stored_states
    from experiments.runs.store import ResultsStore

    cfg = None
    if args.config:

        cfg = load_config(args.config)
    store = ResultsStore(_store_dir(args, cfg), create=False)
    states = stored_states(store)  # every stored unit against the running code
    locks = store.locks()
    running = {i.key: i for i in locks if not i.is_stale(store.stale_after_s)}
    errors = store.errors()
    by = {st: [k for k, (s, _) in states.items() if s == st] for st in ("done", "stale", "damaged", "unchecked")}
    line = (f"store {store.root}: {len(states)} unit files: {len(by['done'])} current, "
            f"{len(by['stale'])} stale, {len(by['damaged'])} damaged")
    if by["unchecked"]:
        line += f", {len(by['unchecked'])} not checked (analysis not registered)"
    print(line + f"; {len(running)} running, {len(errors)} failed")
    if cfg is not None:
        units = cfg.units()
        unit_states = store.classify(units, expected_provenance(units))
        n = {st: sum(s == st for s, _ in unit_states.values()) for st in ("done", "stale", "damaged", "missing")}
        todo = [u for u in units if unit_states[u.key][0] != "done"]
        print(f"sweep {cfg.name!r} ({cfg.config_hash}): {n['done']}/{len(units)} done, {n['stale']} stale, "
              f"{n['damaged']} damaged, {sum(u.key in running for u in todo)} running, "
              f"{sum(u.key in errors for u in todo)} failed, "
              f"{sum(unit_states[u.key][0] == 'missing' and u.key not in running and u.key not in errors for u in todo)}"
              f" not started")
        if n["stale"] or n["damaged"]:
            print(f"  `iclwb sweep run {args.config}` recomputes the stale and damaged units")
        for u in todo[: args.show]:
            st, why = unit_states[u.key]
            if st == "missing":
                st = "running" if u.key in running else "failed" if u.key in errors else "missing"
                why = running[u.key].describe() if u.key in running else ""
            print(f"  {st:8s} {u.key}  {u.label()}" + (f"  ({why})" if why else ""))
    else:
        for st in ("stale", "damaged", "unchecked"):
            if by[st]:
                print(f"  {st}: " + _counts(states[k][1] for k in by[st]))
        for k in (by["damaged"] + by["stale"])[: args.show]:
            print(f"  {states[k][0]:8s} {k}  {states[k][1]}")
        for sweep in store.sweeps():
            keys = sweep.get("units", [])
            print(f"  sweep {sweep['name']!r} ({sweep['config_hash']}): "
                  f"{sum(states.get(k, ('',))[0] == 'done' for k in keys)}/{len(keys)} done and current")
    for info in locks[: args.show]:
        print(f"  lock {info.key}: {info.describe()}")
    if any(i.state != "live" for i in locks):
        print(f"  `iclwb sweep unlock --store {store.root}` breaks dead locks (`--force`: any lock)")
    for key, err in list(errors.items())[: args.show]:
        print(f"  failed {key}: {err.get('error', '')[:160]}")
    return 0


def _cmd_unlock(args: argparse.Namespace) -> int:
    from experiments.runs.config import load_config
    from experiments.runs.store import ResultsStore

    cfg = None
    if args.config:

        cfg = load_config(args.config)
    store = ResultsStore(_store_dir(args, cfg), create=False)
    keys = args.keys or None
    broken = store.unlock(keys, force=args.force)
    for info in broken:
        print(f"broke lock {info.key}: {info.describe()}")
    left = [i for i in store.locks() if keys is None or i.key in keys]
    print(f"{len(broken)} lock(s) broken, {len(left)} left in {store.root / 'locks'}")
    for info in left:
        print(f"  lock {info.key}: {info.describe()}")
    if left and not args.force:
        print("  these are held by running sweeps (or cannot be checked from this host); "
              "`--force` breaks them, only if you know their sweep is gone")
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    import pandas as pd

    from experiments.runs.store import ResultsStore, StoreError

    store = ResultsStore(args.store or "results/demo", create=False)
    runs = "all" if args.all_runs else "current"
    if args.stats:
        return _print_stats(store, args)
    if args.sql:
        df = store.sql(args.sql)
    else:
        filters = {"model": args.model, "task": args.task, "k": args.k, "analysis": args.analysis,
                   "metric": args.metric, "seed": args.seed}
        # None means "no filter"; 0 (seed 0, k 0) and "" are values to match
        df = store.frame(runs=runs, **{c: v for c, v in filters.items() if v is not None})
        if not store.finished_keys():
            raise StoreError(f"results store {store.root} has no finished units yet"
                             + (f" ({store.skipped_line()})" if store.skipped else ""))
        n_sup = len(df.attrs.get("iclwb.superseded") or {})
        if n_sup and runs == "current":
            print(f"iclwb: note: {n_sup} superseded unit(s) left out (the current unit of each cell is "
                  f"shown); --all-runs shows every run, with a column 'current'", file=sys.stderr)
    if store.skipped:
        print(f"iclwb: warning: {store.skipped_line()}", file=sys.stderr)
    mixed = _version_notes(store, df)
    for note in mixed:
        print(f"iclwb: warning: {note}", file=sys.stderr)
    if args.export:
        parent = os.path.dirname(os.path.abspath(args.export))
        if not os.path.isdir(parent):
            raise StoreError(f"--export {args.export!r}: the folder {parent} does not exist; "
                             f"create it first (mkdir -p {parent}) or export elsewhere")
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
        if args.all_runs and "current" in df.columns:
            dims = ["current", "unit_key"] + dims
        if mixed and "analysis_version" in df.columns:
            dims.insert(1, "analysis_version")
        df = df[dims]
    with pd.option_context("display.max_rows", args.limit, "display.max_columns", 30, "display.width", 160):
        print(df.head(args.limit).to_string(index=False))
    if len(df) > args.limit:
        print(f"... {len(df)} rows in all (use --limit N, --export FILE.csv)")
    return 0


def _print_stats(store, args: argparse.Namespace) -> int:
    """``sweep results --stats``: the report's statistics tables (n, value, 95% CI; for comparisons
    effect, its CI, p, BH q, MDE, verdict), one per analysis run, filtered by --model / --task."""
    import pandas as pd

    from experiments.runs.report import build_report



    tables = []
    for name, tab in build_report(store, runs="all" if args.all_runs else "current").tables.items():
        for col in ("model", "task"):
            want = getattr(args, col)
            if want is not None and col in tab.columns:
                tab = tab[tab[col].astype(str) == want]
        if len(tab):
            tables.append(tab.assign(table=name))
    if not tables:
        print("no statistics for these results (no per-prompt rows match)")
        return 0
    if args.export:
        out = pd.concat(tables, ignore_index=True)
        if args.export.endswith(".parquet"):
            out.astype({c: str for c in out.columns if out[c].dtype == object}).to_parquet(args.export, index=False)
        else:
            out.to_csv(args.export, index=False)
        print(f"wrote {len(out)} statistics rows to {args.export}")
        return 0
    with pd.option_context("display.max_rows", args.limit, "display.max_columns", 40, "display.width", 200):
        for tab in tables:
            print(f"== {tab['table'].iloc[0]} ==")
            print(tab.drop(columns="table").head(args.limit).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
            print()
    return 0


def _version_notes(store, df) -> list[str]:
    """Lines saying when the rows come from different analysis versions or from stale units."""
    from experiments.runs.executors import stored_states



    if df.empty or "unit_key" not in df.columns or "analysis" not in df.columns:
        return []
    notes = []
    units = df.drop_duplicates("unit_key")
    for analysis, d in units.groupby("analysis"):
        cols = [d[c].astype(object).fillna("none") if c in d.columns else ["none"] * len(d)
                for c in ("analysis_version", "code_hash")]
        versions = Counter(zip(*cols))
        if len(versions) > 1:
            parts = ", ".join(f"version {v} code {c[:8]} ({n} units)" for (v, c), n in versions.most_common())
            notes.append(f"the rows of analysis {analysis!r} mix {len(versions)} versions: {parts}")
    states = stored_states(store)
    stale = [states[k][1] for k in units["unit_key"] if states.get(k, ("",))[0] == "stale"]
    if stale:
        notes.append(f"{len(stale)} of {len(units)} units in these rows are stale ("
                     + _counts(stale) + "); rerun their sweep (`iclwb sweep run CONFIG`) to recompute them")
    return notes


def _cmd_prune(args: argparse.Namespace) -> int:
    from experiments.runs.store import ResultsStore

    store = ResultsStore(args.store, create=False)
    sel = store.selection()
    if not sel.superseded:
        print(f"store {store.root}: no superseded units ({len(sel.current)} current)")
        return 0
    for key, why in sorted(sel.superseded.items()):
        print(f"  {'would move' if args.dry_run else 'moved'} {key}  {' '.join(map(str, sel.cells[key][:5]))}: {why}")
    if args.dry_run:
        print(f"{len(sel.superseded)} superseded unit(s) would move to {store.root / 'superseded'} (--dry-run)")
        return 0
    moved = store.prune()
    print(f"moved {len(moved)} superseded unit(s) to {store.root / 'superseded'} (nothing deleted; "
          f"move a file back into units/ to restore it); {len(sel.current)} current units stay")
    return 0


def _guard(fn):
    """Print a store problem as one line (exit 2) instead of a traceback."""
    def wrapped(args: argparse.Namespace) -> int:
        from experiments.runs.store import StoreError

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

    ul = sp.add_parser("unlock", help="break the locks of sweeps that are gone (status lists every lock)")
    ul.add_argument("keys", nargs="*", help="unit keys whose locks to break (default: all)")
    ul.add_argument("--config", help="a sweep config: its store")
    ul.add_argument("--store", help=f"results folder (default: the config's, else {DEFAULT_STORE})")
    ul.add_argument("--force", action="store_true",
                    help="also break live locks and locks of other hosts (only if their sweep is gone: "
                         "their units may otherwise be computed twice)")
    ul.set_defaults(func=_guard(_cmd_unlock))

    q = sp.add_parser("results", help="the stored results as a table (filter, export)")
    q.add_argument("--store", default=None, help="results folder (default results/demo)")
    q.add_argument("--model")
    q.add_argument("--task")
    q.add_argument("--k", type=int)
    q.add_argument("--seed", type=int)
    q.add_argument("--analysis")
    q.add_argument("--metric")
    q.add_argument("--sql", help="SQL over the views 'current' (the current unit of each cell) and 'results' "
                                 "(every run, with a boolean column 'current'), e.g. "
                                 "\"SELECT model, avg(value) FROM current GROUP BY model\"")
    q.add_argument("--all-runs", action="store_true",
                   help="every stored run, superseded ones included (column 'current'); default: only the "
                        "current unit of each cell (analysis, model, task, k, seed, prompt format)")
    q.add_argument("--export", help="write the rows to FILE.csv or FILE.parquet")
    q.add_argument("--limit", type=int, default=40)
    q.add_argument("--all-columns", action="store_true", help="include the provenance columns")
    q.add_argument("--stats", action="store_true",
                   help="the statistics of each analysis run instead of the rows: n, value, 95%% CI and, "
                        "for comparisons, effect with its CI, p, BH q, MDE and verdict")
    q.set_defaults(func=_guard(_cmd_results))

    pr = sp.add_parser("prune", help="move superseded units (not the current unit of their cell) to superseded/")
    pr.add_argument("--store", required=True, help="results folder")
    pr.add_argument("--dry-run", action="store_true", help="only list what would move")
    pr.set_defaults(func=_guard(_cmd_prune))

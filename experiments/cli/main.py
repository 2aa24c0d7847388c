"""``iclwb``: the workbench's command line.

    iclwb zoo list                       the built-in models and their headline metrics
    iclwb zoo train NAME [--seed S] [--checkpoints N]
                                         retrain a zoo model reproducibly and save its checkpoint
                                         (and N checkpoints spaced in log step)
    iclwb scan MODEL                     head scan (previous-token, induction, ...) of any model
    iclwb dynamics NAME [--out CSV]      training dynamics over a zoo model's checkpoint series
    iclwb demo [--quick]                 the standard study on the built-in models (main job)
    iclwb sweep run|status|results ...   scripted sweeps (see experiments.runs)
    iclwb app [--results DIR]            the Streamlit app
    iclwb figures --store DIR --out DIR [--format svg,pdf,png]
                                         the report's figures as static files, its tables as
                                         Markdown and LaTeX (for a paper)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from experiments.cli.app import register as app_register
from experiments.cli.figures import register as figures_register
from experiments.cli.power import register as power_register
from experiments.cli.study import register as study_register
from experiments.cli.sweep import register as sweep_register
from probes.errors import WorkbenchError

# The command handlers import what they run when they run: importing every command's
# implementation up front (torch, transformer_lens, scipy, pandas, plotly, duckdb) made
# `iclwb --help` take 7.0 s instead of 3.1 s (measured on the project's 2-core machine).


def _cmd_zoo_list(args: argparse.Namespace) -> int:
    from experiments.models import zoo

    for name in zoo.names():
        try:
            card = zoo.read_card(name)
        except (FileNotFoundError, KeyError):
            print(f"{name:16s}  (no checkpoint: run `iclwb zoo train {name}`)")
            continue
        m = card.get("metrics", {})
        headline = {k: v for k, v in m.items() if not isinstance(v, (list, dict))}
        print(f"{name:16s}  seed={card['seed']} steps={card['steps']} "
              f"train_s={card.get('train_seconds')}  {json.dumps(headline)}")
    return 0


def _cmd_zoo_train(args: argparse.Namespace) -> int:
    from experiments.models.zoo import training

    card = training.train_and_save(args.name, seed=args.seed, steps=args.steps, progress=not args.quiet,
                                   checkpoints=args.checkpoints)
    print(json.dumps({k: card[k] for k in ("name", "seed", "steps", "train_seconds", "metrics")},
                     indent=2))
    return 0


def _cmd_scan(args: argparse.Namespace) -> int:
    from experiments.models.loading import load_model
    from experiments.studies.scan import format_scan, head_scan

    model = load_model(args.model)
    print(format_scan(head_scan(model), top=args.top))
    return 0


def _cmd_dynamics(args: argparse.Namespace) -> int:
    from experiments.studies import dynamics

    table = dynamics.dynamics_table(args.name, steps=args.steps or None, seed=args.seed,
                                    n_prompts=args.n_prompts,
                                    progress=None if args.quiet else lambda m: print(m, file=sys.stderr))
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"wrote {len(table)} rows to {args.out}")
    score = "induction" if (table["metric"] == "induction").any() else None
    if score and table["step"].nunique() >= 2:
        curve = dynamics.training_curve(args.name)["loss"].tolist()
        print(dynamics.format_phase(dynamics.phase_summary(table, curve, score=score)))
    print(dynamics.format_overview(table))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from experiments.runs.demo import run_demo

    return run_demo(quick=args.quick, out_dir=args.out, fresh=args.fresh)


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give e.g. 5") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iclwb", description="ICL Workbench")
    sub = p.add_subparsers(dest="command", required=True)

    zp = sub.add_parser("zoo", help="the built-in model zoo").add_subparsers(dest="zoo_cmd", required=True)
    zl = zp.add_parser("list", help="list zoo models and their metrics")
    zl.set_defaults(func=_cmd_zoo_list)
    zt = zp.add_parser("train", help="retrain a zoo model from its seed")
    zt.add_argument("name")
    zt.add_argument("--seed", type=int, default=None)
    zt.add_argument("--steps", type=int, default=None)
    zt.add_argument("--quiet", action="store_true")
    zt.add_argument("--checkpoints", type=int, default=None, metavar="N",
                    help="also keep N checkpoints evenly spaced in log step (series/ beside the model)")
    zt.set_defaults(func=_cmd_zoo_train)

    sc = sub.add_parser("scan", help="head scan of a model")
    sc.add_argument("model")
    sc.add_argument("--top", type=_positive_int, default=5, help="heads listed per score (>= 1)")
    sc.set_defaults(func=_cmd_scan)

    dy = sub.add_parser("dynamics", help="training dynamics of a zoo model over its checkpoint series")
    dy.add_argument("name")
    dy.add_argument("--steps", type=int, nargs="*", default=None, help="only these checkpoint steps")
    dy.add_argument("--seed", type=int, default=0)
    dy.add_argument("--n-prompts", type=int, default=64)
    dy.add_argument("--out", default=None, help="write the tidy table to this CSV file")
    dy.add_argument("--quiet", action="store_true")
    dy.set_defaults(func=_cmd_dynamics)

    dm = sub.add_parser("demo", help="run the standard study on the built-in models")
    dm.add_argument("--quick", action="store_true", help="a smaller version (for tests)")
    dm.add_argument("--out", default="results/demo", help="results folder")
    dm.add_argument("--fresh", action="store_true", help="recompute: remove this study's stored units and report first "
                         "(other files in --out are kept)")
    dm.set_defaults(func=_cmd_demo)

    for register in (sweep_register, app_register, study_register, power_register, figures_register):
        register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; finished units are kept", file=sys.stderr)
        return 130
    except (WorkbenchError, OSError, KeyError) as err:
        # the project's own errors (by type) and file-system problems: one line, no traceback
        print(f"iclwb: error: {_one_line(err)}", file=sys.stderr)
        return 2


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) if not isinstance(err, KeyError) else str(err.args[0] if err.args else err)
    if isinstance(err, OSError) and not isinstance(err, WorkbenchError):
        where = f" ({err.filename})" if getattr(err, "filename", None) and str(err.filename) not in text else ""
        text = f"{text}{where}: check the path and its permissions"
    return text


if __name__ == "__main__":
    sys.exit(main())

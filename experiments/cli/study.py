"""``iclwb study full`` and ``iclwb study findings`` (``experiments.runs.study``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FULL_CONFIG = ROOT / "configs" / "full.toml"
"""The study's config (``experiments.runs.study.FULL_CONFIG``, tested equal)."""


def register(sub: Any) -> None:
    """``iclwb study full`` and ``iclwb study findings``."""
    sp = sub.add_parser("study", help="the replicated full study and its findings page").add_subparsers(
        dest="study_cmd", required=True)
    f = sp.add_parser("full", help="run configs/full.toml (prints the expected run time first; "
                                   "resumable) and write docs/findings.md")
    f.add_argument("--config", default=str(FULL_CONFIG))
    f.add_argument("--store", default=None, help="results store (default: the config's)")
    f.add_argument("--workers", type=int, default=1)
    f.add_argument("--analyses", default="", help="comma-separated subset of the config's analyses")
    f.add_argument("--models", default="", help="comma-separated subset of the config's models")
    f.add_argument("--tasks", default="", help="comma-separated subset of the config's tasks")
    f.add_argument("--ks", default="", help="comma-separated subset of the config's k")
    f.add_argument("--findings", default=str(ROOT / "docs" / "findings.md"),
                   help="where to write the findings page ('' to skip)")
    f.add_argument("--dry-run", action="store_true", help="only print the expected run time")
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=_full)
    g = sp.add_parser("findings", help="write the findings page from a results store")
    g.add_argument("--store", required=True)
    g.add_argument("--out", default=str(ROOT / "docs" / "findings.md"))
    g.add_argument("--config", default=str(FULL_CONFIG))
    g.add_argument("--no-figures", action="store_true",
                   help="only the Markdown (the figures beside it need Chromium: scripts/setup-browser.sh)")
    g.set_defaults(func=_findings)


def _full(a: Any) -> int:
    from experiments.runs.study import run_full

    return run_full(
        a.config, a.store, a.workers, [s for s in a.analyses.split(",") if s],
        a.findings or None, a.dry_run, not a.quiet, models=[s for s in a.models.split(",") if s],
        tasks=[s for s in a.tasks.split(",") if s], ks=[int(s) for s in a.ks.split(",") if s])


def _findings(a: Any) -> int:
    from experiments.runs.findings import write_findings

    print(write_findings(a.store, a.out, config=a.config, figures=not a.no_figures))
    return 0

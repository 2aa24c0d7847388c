"""``iclwb figures``: every figure of a store's report as static files, and every table as
Markdown and LaTeX (``experiments.runs.export``)."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    f = sub.add_parser("figures", help="write the report's figures (SVG/PDF/PNG) and tables (Markdown, LaTeX) "
                                       "for a paper")
    f.add_argument("--store", required=True, help="results store (e.g. results/demo)")
    f.add_argument("--out", required=True, help="folder for the files (created)")
    f.add_argument("--format", default="svg,pdf", help="comma-separated: svg, pdf, png (default svg,pdf)")
    f.add_argument("--width", type=int, default=900, help="figure width in px (heights follow the figure)")
    f.set_defaults(func=_figures)


def _figures(a: Any) -> int:
    from experiments.runs.export import export

    done = export(a.store, a.out, a.format, width=a.width)
    print(done.summary())
    return 0

"""``iclwb figures --store DIR --out DIR``: the report of a store for a paper. Every figure of
``build_report`` (shown and folded) as static files, one per format, and every table of the page
(the verdict table first, then one per question) as Markdown and LaTeX, plus ``index.md`` naming
each file with its full title."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from experiments.runs.figures import browser_path, parse_formats, slug, write_figures
from experiments.runs.report import build_report
from experiments.runs.store import ResultsStore
from experiments.runs.tables import to_latex, to_markdown


@dataclass
class Export:
    out: Path
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"wrote {len(self.figures)} figure files and {len(self.tables)} table files to {self.out} "
                f"in {self.seconds:.1f}s (index: {self.out / 'index.md'})")


def export(store: str | Path, out: str | Path, formats: str = "svg,pdf", width: int = 900) -> Export:
    """Write the report's figures in ``formats`` to ``out/figures`` and its tables to
    ``out/tables`` (``.md`` and ``.tex``)."""
    t0 = time.perf_counter()
    fmts = parse_formats(formats)
    browser_path()  # fail before the report is built when there is no browser to draw with
    rs = ResultsStore(store, create=False)
    rep = build_report(rs)
    out = Path(out)
    res = Export(out)
    figs = rep.all_figures()
    res.figures = write_figures(figs, out / "figures", fmts, width=width)
    index = [f"# Figures and tables of `{store}`", "", "## Figures", ""]
    for name, fig in figs.items():
        title = str(fig.layout.title.text or name).replace("<br>", " ")
        index.append(f"- `figures/{slug(name)}.{{{','.join(fmts)}}}`: {title}")
    index += ["", "## Tables", ""]
    tdir = out / "tables"
    tdir.mkdir(parents=True, exist_ok=True)
    for name, table in rep.display_tables().items():
        caption = "Verdicts: one row per claim" if name == "verdicts" else f"{name}: every comparison"
        for suffix, text in ((".md", to_markdown(table)), (".tex", to_latex(table, caption, f"tab:{slug(name)}"))):
            path = tdir / f"{slug(name)}{suffix}"
            path.write_text(text)
            res.tables.append(path)
        index.append(f"- `tables/{slug(name)}.{{md,tex}}`: {caption} ({len(table)} rows)")
    (out / "index.md").write_text("\n".join(index) + "\n")
    res.seconds = time.perf_counter() - t0
    return res

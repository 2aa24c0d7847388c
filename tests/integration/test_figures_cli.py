"""``iclwb figures --store DIR --out DIR --format svg,pdf``: every figure of the report as static
files (kaleido driving Debian's Chromium), each table as Markdown and LaTeX; the findings page's
figures beside it. Needs /usr/bin/chromium (scripts/setup-browser.sh installs it)."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from experiments.runs.figures import browser_path, slug

REPO = Path(__file__).resolve().parents[2]
browser = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory) -> Path:
    """results/demo where `make demo` has run, else a quick demo store built here."""
    if (REPO / "results" / "demo" / "store.json").exists():
        return REPO / "results" / "demo"
    from experiments.runs.demo import run_demo

    out = tmp_path_factory.mktemp("figs") / "demo"
    assert run_demo(quick=True, out_dir=str(out), progress=False) == 0
    return out


def _svg_text(path: Path) -> str:
    """The SVG's text, one line per <text> element or line of one (multi-line titles are <tspan>s)."""
    parts = re.findall(r"<text[^>]*>(.*?)</text>", path.read_text(), flags=re.S)
    return html.unescape("\n".join(re.sub(r"<[^>]+>", "\n", p) for p in parts))


@browser[0]
@browser[1]
def test_iclwb_figures_writes_every_report_figure_as_svg_and_pdf(demo_store, tmp_path, capsys):
    from experiments.cli.main import main
    from experiments.runs.report import build_report

    assert Path(browser_path()).exists(), "run scripts/setup-browser.sh (installs Debian's chromium)"
    out = tmp_path / "paper"
    assert main(["figures", "--store", str(demo_store), "--out", str(out), "--format", "svg,pdf"]) == 0
    assert "figure files" in capsys.readouterr().out
    rep = build_report(demo_store)
    figs = rep.all_figures()
    assert len(figs) >= 10 and any(n.startswith("circuit/forest") for n in figs)
    for name, fig in figs.items():
        svg, pdf = out / "figures" / f"{slug(name)}.svg", out / "figures" / f"{slug(name)}.pdf"
        assert svg.stat().st_size > 1000 and pdf.read_bytes()[:5] == b"%PDF-", name
        text = _svg_text(svg)
        # the full title, line by line (long titles wrap; none is cut off)
        for line in str(fig.layout.title.text).split("<br>"):
            assert line in text, (name, line)
        # a layer axis labels whole layers only
        for axis in ("xaxis", "yaxis"):
            if str(fig.layout[axis].title.text or "").lower() == "layer":
                ticks = re.findall(rf'class="{axis[0]}tick"><text[^>]*>([^<]*)</text>', svg.read_text())
                assert ticks and all(re.fullmatch(r"\d+", t) for t in ticks), (name, ticks)
    # the forest plot's points in the SVG are the verdict table's rows: one marker per effect row
    knock = rep.effects[rep.effects["unit"] == "knockout"]
    svg = (out / "figures" / "circuit-forest-knockout.svg").read_text()
    assert len(re.findall(r'class="point\b', svg)) == svg.count('class="errorbar"') == len(knock)
    # tables: the verdict table first, as Markdown and as LaTeX with the same numbers
    md = (out / "tables" / "verdicts.md").read_text()
    tex = (out / "tables" / "verdicts.tex").read_text()
    vt = rep.display_tables()["verdicts"]
    assert md.splitlines()[0].startswith("| claim | sentence |") and len(md.splitlines()) == len(vt) + 2
    nums = re.compile(r"-?\d+\.\d+")
    for cell in vt.iloc[:, -1]:
        assert nums.findall(cell)[:3] == nums.findall(cell.replace("<", "$<$"))[:3]
        assert " ".join(nums.findall(cell)[:3]) in " ".join(nums.findall(tex))
    assert (out / "index.md").read_text().count("figures/") == len(figs)


@browser[1]
def test_a_30_layer_heatmap_file_labels_every_second_layer(tmp_path):
    from experiments.runs.figures import head_heatmap, write_figures

    df = pd.DataFrame([{"layer": l, "head": h, "value": h / 9} for l in range(30) for h in range(9)])
    fig = head_heatmap(df, "a 30-layer model", "induction", 0.0, 1.0)
    (svg,) = write_figures({"hm": fig}, tmp_path, ["svg"])
    ticks = re.findall(r'class="ytick"><text[^>]*>([^<]*)</text>', svg.read_text())
    assert sorted(ticks, key=int) == [str(i) for i in range(0, 30, 2)]  # 15 labels: 0, 2, ..., 28
    assert "a 30-layer model: induction score by head" in _svg_text(svg)


@browser[0]
@browser[1]
def test_the_findings_page_opens_with_the_verdict_table_and_links_its_figures(tmp_path):
    from experiments.runs.findings import write_findings
    from tests.helpers import store_with_superseded

    store, _, _ = store_with_superseded(tmp_path / "store")
    page = write_findings(store.root, tmp_path / "docs" / "findings.md").read_text()
    first_table = page.index("\n|")
    assert page.index("## Verdicts") < first_table < page.index("## 1.")
    assert page.splitlines()[page[:first_table].count("\n") + 1].startswith("| claim | sentence |")
    assert page.index("## Provenance") > page.index("## 4.")
    links = re.findall(r"!\[[^\]]*\]\((findings-figures/[^)]+\.svg)\)", page)
    assert "findings-figures/circuit-forest-knockout.svg" in links
    for link in links:
        assert (tmp_path / "docs" / link).stat().st_size > 1000


def test_no_browser_is_one_clear_error(tmp_path, monkeypatch, capsys):
    from experiments.cli.main import main
    from experiments.runs import figures

    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "nothing"))
    monkeypatch.setattr(figures, "BROWSERS", (str(tmp_path / "chromium"),))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert main(["figures", "--store", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no Chromium" in err and "scripts/setup-browser.sh" in err and not (tmp_path / "o").exists()

"""Numbers as a reader sees them: three significant figures, p- and q-values as "< 0.001", an
estimate and its interval in one cell; and a table written as HTML, Markdown or LaTeX.

The report, the findings page and ``iclwb figures`` print every table through ``display_table``
(the raw tables stay in ``Report.tables`` for ``iclwb sweep results --stats`` and CSV export).
"""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

P_FLOOR = 0.001
"""p- and q-values below this print as "< 0.001"."""


def sig(x: Any, digits: int = 3) -> str:
    """``x`` to ``digits`` significant figures: fixed-point between 1e-4 and 1e4 (``0.0234``,
    ``-0.438``, ``1.00``), an exponent outside (``3.23e-27``); whole numbers as themselves;
    "" for a missing value. Never "-0"."""
    if x is None or isinstance(x, str):
        return "" if x is None else x
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    v = float(x)
    if not math.isfinite(v):
        return "" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if v == 0:
        return "0"
    if abs(v) >= 1e4:
        return f"{v:.{digits - 1}e}" if abs(v) >= 1e7 else f"{v:.0f}"
    if abs(v) < 1e-4:
        return f"{v:.{digits - 1}e}"
    text = f"{v:#.{digits}g}"
    if "e" in text:  # e.g. 9999.5 rounds up to 1.00e+04
        return f"{v:.0f}"
    return text.rstrip(".")


def p_text(p: Any) -> str:
    """A p- or q-value: "< 0.001" below ``P_FLOOR``, else three significant figures."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    v = float(p)
    return f"< {P_FLOOR:g}" if v < P_FLOOR else sig(v)


def interval(value: Any, lo: Any, hi: Any) -> str:
    """``value [lo, hi]`` at three significant figures ("" when the value is missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    v = sig(value)
    if lo is None or hi is None or any(isinstance(c, float) and math.isnan(c) for c in (lo, hi)):
        return v
    return f"{v} [{sig(lo)}, {sig(hi)}]"


# column name -> (header, the columns that form one cell)
MERGED = {
    "value": ("value [CI]", ("value", "ci_low", "ci_high")),
    "acc_mean": ("accuracy [CI]", ("acc_mean", "ci_low", "ci_high")),
    "random_mean": ("random control [CI]", ("random_mean", "random_ci_low", "random_ci_high")),
    "effect": ("effect [CI]", ("effect", "effect_ci_low", "effect_ci_high")),
}
P_COLUMNS = {"p_value": "p", "q_value": "q"}
SKIP = {"ci_low", "ci_high", "random_ci_low", "random_ci_high", "effect_ci_low", "effect_ci_high"}


def display_table(df: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """``df`` as strings a reader can read: the ``columns`` it has (all by default), an estimate
    and its interval merged into one "value [CI]" cell, p and q as "< 0.001", every other number
    at three significant figures, whole-number columns as integers."""
    cols = [c for c in (columns or list(df.columns)) if c in df.columns and c not in SKIP]
    out: dict[str, list[str]] = {}
    for c in cols:
        if c in MERGED and all(m in df.columns for m in MERGED[c][1]):
            head, (v, lo, hi) = MERGED[c]
            out[head] = [interval(a, b, d) for a, b, d in zip(df[v], df[lo], df[hi])]
        elif c in P_COLUMNS:
            out[P_COLUMNS[c]] = [p_text(x) for x in df[c]]
        elif pd.api.types.is_integer_dtype(df[c]) or (pd.api.types.is_float_dtype(df[c]) and _whole(df[c])):
            out[c] = ["" if pd.isna(x) else str(int(x)) for x in df[c]]
        else:
            out[c] = [sig(x) if isinstance(x, float) else ("" if x is None else str(x)) for x in df[c]]
    return pd.DataFrame(out)


def _whole(s: pd.Series) -> bool:
    vals = s.dropna()
    return len(vals) > 0 and bool(((vals % 1) == 0).all()) and s.name in {"n", "k", "layer", "head", "n_seeds",
                                                                          "n_prompts", "seed", "step"}


def to_html(table: pd.DataFrame, cls: str = "tab") -> str:
    """A string table as an HTML table in a horizontally scrolling box (no column is cut off)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>"
                   for r in table.itertuples(index=False))
    return f"<div class='scroll'><table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"


def to_markdown(table: pd.DataFrame) -> str:
    """A string table as a GitHub Markdown table ("|" in a cell becomes "/")."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "/").replace("\n", " ")
    lines = ["| " + " | ".join(cell(c) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"$<$",
          ">": r"$>$", "→": r"$\to$", "←": r"$\leftarrow$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def to_latex(table: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A string table as a LaTeX ``table`` with a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``);
    numbers are printed exactly as in the other formats (three significant figures)."""
    spec = "l" * len(table.columns)
    lines = [r"\begin{table}[ht]", r"\centering", r"\small", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(v) for v in r) + r" \\" for r in table.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"

"""How fast the Results page answers on a real store (default ``results/full``): first load and
one filter change.

Headless (streamlit.testing AppTest, one session): the time from a request (opening the page, or
a filter change) to the finished script run, i.e. the server side of a render (the browser's
paint comes on top). Each filter change picks another model/analysis, so the figure's summary is
computed rather than served from st.cache_data. Baselines in the same run: the page as it was
before its rows were queried through DuckDB (commit 3ee5878's ``app/pages/5_results.py``, run the
same way on the same filter changes: the whole frame through st.cache_data, filtered in pandas,
all rows shown), and the library path it stood on (``ResultsStore.frame()`` into pandas, the
pandas filter and the CI table of one selection); the ratios are the speed-up per interaction.

    python bench/results_latency.py [--results results/full] [--repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "app" / "main.py"
OLD_PAGE = ("3ee5878", "app/pages/5_results.py")


def filter_times(at: AppTest, picks: list[tuple[str, str]]) -> list[float]:
    """Seconds per filter change (model, then analysis) over ``picks``."""
    out = []
    for model, analysis in picks:
        t = time.perf_counter()
        at.multiselect(key="res_filter_model").set_value([model]).run()
        at.multiselect(key="res_filter_analysis").set_value([analysis]).run()
        out.append((time.perf_counter() - t) / 2)  # two interactions
        assert not at.exception, [e.value for e in at.exception]
        shown = at.dataframe[-1].value
        assert set(shown["model"]) <= {model} and set(shown["analysis"]) <= {analysis}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", default=str(ROOT / "results" / "full"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from experiments.runs.store import ResultsStore
    from iclwb_app import results_view

    results = str(Path(args.results).resolve())
    at = AppTest.from_file(str(MAIN), default_timeout=600)
    at.session_state["results_dir"] = results
    at.session_state["results_root"] = results
    at.run()
    at.switch_page("views/5_results.py")
    t = time.perf_counter()
    at.run()
    first_load = time.perf_counter() - t
    assert not at.exception, [e.value for e in at.exception]
    models = at.multiselect(key="res_filter_model").options
    analyses = at.multiselect(key="res_filter_analysis").options
    picks = list(itertools.islice(itertools.cycle(itertools.product(models, analyses)), 2 * args.repeats))

    filter_s = filter_times(at, picks)

    old_first, old_s = float("nan"), [float("nan")]
    src = subprocess.run(["git", "show", ":".join(OLD_PAGE)], cwd=ROOT, capture_output=True, text=True)
    if src.returncode == 0:
        with tempfile.TemporaryDirectory() as tmp:
            page = Path(tmp) / "old_results.py"
            page.write_text(src.stdout)
            old = AppTest.from_file(str(page), default_timeout=600)
            old.session_state["results_dir"] = results
            old.session_state["results_root"] = results
            t = time.perf_counter()
            old.run()
            old_first = time.perf_counter() - t
            assert not old.exception, [e.value for e in old.exception]
            old_s = filter_times(old, picks[: args.repeats])

    base_s = []
    for model, analysis in picks[: args.repeats]:
        t = time.perf_counter()
        df = ResultsStore(results, create=False).frame()
        view = results_view.filter_results(df, model=[model], analysis=[analysis])
        metric = results_view.metric_names(view)[0]
        results_view.metric_ci_table(view, metric, ["model", "k"])
        base_s.append(time.perf_counter() - t)

    med = statistics.median
    print(f"results {results}: {len(models)} models x {len(analyses)} analyses, {len(filter_s)} filter changes")
    print(f"old_page_first_load_s: {old_first:.3f}")
    print(f"old_page_filter_s: {med(old_s):.3f}")
    print(f"frame_baseline_s: {med(base_s):.3f}")
    print(f"first_load_s: {first_load:.3f}")
    print(f"filter_speedup_vs_old_page: {med(old_s) / med(filter_s):.1f}")
    print(f"filter_speedup_vs_frame: {med(base_s) / med(filter_s):.1f}")
    print(f"results_filter_s: {med(filter_s):.3f}")


if __name__ == "__main__":
    main()

"""How fast the app answers: explorer render with a cached zoo model, and a change of head.

Headless (streamlit.testing AppTest, one session): the time from a request (navigating to the
explorer page, or a head-button click) to the finished script run, i.e. the server side of a render; the browser's
paint of the plotly figures comes on top. The model is loaded once beforehand (st.cache_resource),
as in a running app. Each render uses a new prompt seed, so the attention patterns are computed
rather than served from st.cache_data. Baseline in the same run: the library call that computes
what the page shows (iclwb_app.prompting.task_prompt + attention_view.prompt_view), so the ratio is the cost
of the UI around it.

    python bench/app_latency.py [--model induction-2l] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

MAIN = Path(__file__).resolve().parents[1] / "app" / "main.py"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="induction-2l")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from iclwb_app import attention_view, model_info, prompting, ui

    at = AppTest.from_file(str(MAIN), default_timeout=300)
    at.session_state["explorer_model_goto"] = args.model
    t0 = time.perf_counter()
    at.run()  # loads the model into st.cache_resource (and imports everything)
    assert not at.exception, at.exception
    first_load_s = time.perf_counter() - t0
    model = ui.get_model(args.model)
    task = at.selectbox(key="ex_task").value
    k = int(at.number_input(key="ex_k").value)
    L, H = model_info.model_summary(model)["n_layers"], model_info.model_summary(model)["n_heads"]

    render, head, compute = [], [], []
    for r in range(args.repeats):
        # leave the page, then request it again with a new prompt (a new seed: not in st.cache_data)
        at.switch_page("views/5_results.py").run()
        at.session_state["ex_seed"] = 1 + r
        at.switch_page("views/1_explorer.py")
        t = time.perf_counter()
        at.run()
        render.append(time.perf_counter() - t)
        assert not at.exception and len(at.get("plotly_chart")) == 3, at.exception
        assert int(at.number_input(key="ex_seed").value) == 1 + r
        l, h = (r + 1) % L, (r + 2) % H
        btn = at.button(key=f"ex_btn_{l}_{h}")
        t = time.perf_counter()
        btn.click().run()
        head.append(time.perf_counter() - t)
        assert (at.session_state["ex_layer"], at.session_state["ex_head"]) == (l, h)
        t = time.perf_counter()
        attention_view.prompt_view(model, prompting.task_prompt(model, task, k, 1000 + r))
        compute.append(time.perf_counter() - t)

    med = statistics.median
    print(f"model {args.model} ({L} layers x {H} heads), task {task}, k={k}, {args.repeats} repeats")
    print(f"first_load_s: {first_load_s:.3f}")
    print(f"library_compute_s: {med(compute):.4f}")
    print(f"explorer_overhead_ratio: {med(render) / med(compute):.1f}")
    print(f"explorer_render_s: {med(render):.3f}")
    print(f"head_change_s: {med(head):.3f}")


if __name__ == "__main__":
    main()

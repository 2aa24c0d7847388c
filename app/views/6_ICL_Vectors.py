"""ICL vectors: task vectors, function vectors and in-context vectors against zero-shot, ICL and a
random vector of the same norm; and the label-word information flows (label words as anchors)."""

from __future__ import annotations

import streamlit as st

from experiments.models import zoo
from experiments.studies import vectors_figures as vf
from experiments.studies import vectors_study as vs
from iclwb_app import model_info, results_view, stats_view, stored_view, ui

METHOD_NAMES = {"task_vector": "Task vectors", "function_vector": "Function vectors",
                "icv": "In-context vectors", "anchors": "Label-word anchors"}


@st.cache_data(max_entries=32, show_spinner=False)
def cached_study(model_name: str, task: str, k: int, n_prompts: int, seed: int, methods: tuple[str, ...],
                 lambdas: tuple[float, ...], layer_step: int):
    model = ui.get_model(model_name)
    layers = list(range(0, model.cfg.n_layers, layer_step))
    return vs.run_study(model, model_name, task, k=k, n_prompts=n_prompts, seed=seed, methods=methods,
                        lambdas=lambdas, layers=layers, n_dev=max(4, n_prompts // 2),
                        n_aie_prompts=min(16, n_prompts), n_anchor_prompts=min(16, n_prompts))


def parse_lambdas(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in text.replace(";", ",").split(",") if x.strip())
    except ValueError:
        raise vs.StudyError(f"lambdas must be numbers separated by commas (e.g. 0, 0.05, 0.1), got {text!r}") from None
    if not vals or any(v < 0 for v in vals):
        raise vs.StudyError("give at least one lambda, all >= 0 (e.g. 0, 0.05, 0.1)")
    return vals


@st.cache_data(max_entries=16, show_spinner=False)
def cached_stored(_db, signature: tuple, model_name: str, task: str, k: int, seed: int):
    rows = _db.frame(analysis=["vectors"], model=[model_name], task=[task], k=[k], seed=[seed])
    every = _db.frame(analysis=["vectors"], metric=["summary", "correct"])  # the findings page's BH family
    return stored_view.vectors_out(rows), stored_view.vector_findings(every, model_name, task)


def default_model() -> str:

    return "icl-classify" if (zoo.checkpoint_path("icl-classify") / "card.json").exists() else "induction-2l"


st.title("ICL vectors")
st.caption("Task vectors (Hendel et al.): the read-out residual at layer L (blocks.L.hook_resid_post), "
           "averaged over ICL prompts, replacing that position in zero-shot prompts. Function vectors "
           "(Todd et al.): the top-AIE heads' mean outputs through W_O, added at s_q. In-context vectors "
           "(Liu et al.): the first principal direction of demonstration state differences, steering "
           "every layer and position with strength λ. Each against a random vector of the same norm; "
           "the layer / λ is chosen on dev prompts and reported on separate eval prompts.")

source, db = ui.source_picker("vec_source", ["vectors"])
findings_rows = None
if source == stored_view.STORED:
    if db is None or "analysis" not in db.columns or not db.count(analysis=["vectors"]):
        st.info(f"{st.session_state.get('results_dir', '')} holds no ICL-vector units; run a sweep with the "
                "vectors analysis (`iclwb study full`), or use a live run.")
        st.stop()
    if results_view.superseded_note(db):
        st.caption(results_view.superseded_note(db))
    v = {"analysis": ["vectors"]}
    c1, c2, c3, c4 = st.columns([3, 3, 1, 1])
    model_name = c1.selectbox("Model", db.distinct("model", **v), key="vec_st_model")
    task = c2.selectbox("Task", db.distinct("task", **v, model=[model_name]), key="vec_st_task")
    k = int(c3.selectbox("k", db.distinct("k", **v, model=[model_name], task=[task]), key="vec_st_k"))
    seed = int(c4.selectbox("Seed", db.distinct("seed", **v, model=[model_name], task=[task], k=[k]),
                            key="vec_st_seed"))
    signature = results_view.results_signature(st.session_state["results_dir"], ui.results_root())
    out, findings_rows = cached_stored(db, signature, model_name, task, k, seed)
    if not out:
        st.info("This stored unit has no vector rows.")
        st.stop()
else:
    c1, c2, c3, c4, c5 = st.columns([3, 2, 1, 1, 1])
    with c1:
        model_name = ui.model_picker("vec_model", default=default_model())
    model = ui.load_or_error(model_name)
    if model is None:
        st.stop()
    if model_info.model_kind(model) == "vector" or not hasattr(model, "W_O"):
        st.error("This model reads real vectors, not tokens: the ICL vector methods need a token model. "
                 "Pick a zoo token model (icl-classify) or a pretrained one (smollm2-135m).")
        st.stop()
    tasks = vs.tasks_for(model)
    if not tasks:
        st.error(f"No task fits {model_name!r} (its vocabulary has {model.cfg.d_vocab} tokens). "
                 "Pick icl-classify or a pretrained model.")
        st.stop()
    task = ui.task_picker(c2, tasks, "vec_task", getattr(model, "tokenizer", None) is not None)
    if task is None:
        st.stop()
    k_max = max(1, ui.max_k(model_name, task, 64))
    k = int(c3.number_input("k (demos)", min_value=1, max_value=k_max, value=min(4, k_max), step=1, key="vec_k",
                            help=f"at most {k_max}: longer prompts do not fit the model's context "
                                 f"({model.cfg.n_ctx} tokens)"))
    n_prompts = int(c4.number_input("Prompts", min_value=4, max_value=512, value=32, step=4, key="vec_n"))
    seed = int(c5.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1, key="vec_seed"))
    d1, d2, d3 = st.columns([3, 2, 1])
    methods = tuple(d1.multiselect("Methods", list(METHOD_NAMES), default=list(METHOD_NAMES),
                                   format_func=METHOD_NAMES.get, key="vec_methods"))
    lam_text = d2.text_input("λ values (ICV)", value="0, 0.02, 0.05, 0.1, 0.2, 0.4", key="vec_lambdas")
    layer_step = int(d3.number_input("Layer step", min_value=1, max_value=16,  # a model's own default
                                     value=1 if model.cfg.n_layers <= 8 else 3, key=f"vec_layer_step_{model_name}"))
    if not methods:
        st.info("Pick at least one method.")
        st.stop()
    try:
        lambdas = parse_lambdas(lam_text)
    except vs.StudyError as err:
        ui.show_error(err, "bad λ values")
        st.stop()

    key = (model_name, task, k, n_prompts, seed, methods, lambdas, layer_step)
    small = model.cfg.n_layers * model.cfg.n_heads <= 64 and n_prompts <= 64
    ui.wait_for_run("vec_requested", key, not small, "Run study", "vec_run",
                    note="This model is large for a CPU: the study takes minutes.")

    try:
        out = ui.run_with_eta(lambda: cached_study(*key), f"Running the ICL vector study on {model_name} / {task}…",
                              "vectors", model.cfg.n_layers * model.cfg.n_heads * n_prompts * len(methods) / layer_step)
    except (vs.StudyError, *ui.EXPECTED_ERRORS) as err:
        ui.show_error(err, "the study failed")
        st.stop()
    except Exception as err:  # still the user's input (e.g. a model the hooks do not fit), not a crash
        ui.show_error(err, f"the study failed ({type(err).__name__})")
        st.stop()
    ui.mark_run("vec_requested", key)

if "summary" in out:
    summary = out["summary"]
    st.subheader("Accuracy with and without the vector")
    cols = st.columns(len(summary))
    for col, (_, row) in zip(cols, summary.iterrows()):
        col.metric(f"{row['method']}: with vector", f"{row['with vector']:.3f}",
                   delta=f"{row['with vector'] - row['zero-shot']:+.3f} vs zero-shot")
    v_stats = stats_view.vectors_verdict_stats(out["per_prompt"]) if "per_prompt" in out else None
    if findings_rows is not None and len(findings_rows):
        st.subheader("As on the findings page")
        st.caption("Eval accuracy with the vector against a random vector of the same norm (McNemar on the same "
                   "prompts), Benjamini-Hochberg q over every stored model, task and method: the findings page's "
                   "numbers (`experiments.runs.findings.vector_rows`).")
        ui.stats_table(stats_view.findings_view(findings_rows), key="vec_findings")
    st.plotly_chart(vf.summary_figure(summary, v_stats.estimates if v_stats else None), width="stretch",
                    key="vec_summary_fig")
    st.caption("Eval accuracy at the layer / lambda chosen on the dev prompts; error bars: 95% CI (Wilson, "
               "over prompts).")
    st.dataframe(summary, hide_index=True, width="stretch", key="vec_summary_table")
    if v_stats is not None:
        cmp = v_stats.comparisons
        st.subheader("Verdicts")
        st.markdown("\n".join(f"- {line}" for line in stats_view.verdict_lines(
            cmp, lambda r: f"{r['method']}: {r['condition']} vs {r['control']}")) or "No paired comparisons.")
        st.caption("Held-out prompts, paired (McNemar); Benjamini-Hochberg q per method; 95% intervals.")
        ui.stats_table(stats_view.stats_view(cmp), key="vec_verdicts")
    acc = out["accuracy"]
    st.subheader("Sweeps")
    sweep_methods = [m for m in ("task_vector", "function_vector", "icv") if m in set(acc.method)]
    scols = st.columns(len(sweep_methods))
    for col, m in zip(scols, sweep_methods):
        with col:
            st.plotly_chart(vf.sweep_figure(acc, m), width="stretch", key=f"vec_sweep_{m}")
    if "aie" in out:
        st.plotly_chart(vf.aie_figure(out["aie"]), width="stretch", key="vec_aie_fig")
    st.download_button("Download accuracy table (CSV)", acc.to_csv(index=False).encode(),
                       file_name=f"vectors_{model_name}_{task}.csv", key="vec_download")
if "anchors" in out:
    st.subheader("Label words as anchors")
    st.caption("S_wp: text → label words; S_pq: label words → read-out; S_ww: the rest. Wang et al. "
               "find S_wp dominant in shallow layers and S_pq in deep layers.")
    st.plotly_chart(vf.flows_figure(out["anchors"]), width="stretch", key="vec_flows_fig")
    st.caption("Error bars: 95% CI over prompts (BCa bootstrap).")

"""Gemma 3 through the workbench: grouped-query attention with one key/value head, local
(sliding-window) and global layers, and the sqrt(d_model) embedding scale.

Fast tests use a tiny random ``Gemma3ForCausalLM`` written to a temporary folder (3 layers, 4 query
heads, 1 key/value head, sliding window 4 in two of them); the slow ones load gemma3-270m itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from circuits import interventions as I
from circuits import patching as P
from circuits import sweeps as S
from experiments.models.loading import load_model
from probes.prompt import PromptBatch, PromptBuilder
from tests.helpers import check_resume_skips_blocks, tiny_bridge
from tests.integration.test_pretrained import write_tiny_gpt2

N_LAYERS, N_HEADS, D_HEAD, WINDOW = 3, 4, 16, 4


def write_tiny_gemma3(path: Path, seed: int = 0) -> Path:
    """A random 3-layer Gemma3ForCausalLM (GQA 4:1, sliding window 4 in layers 0-1) + a BPE tokenizer."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    write_tiny_gpt2(path, seed)  # its tokenizer (the GPT-2 weights are overwritten below)
    tok = AutoTokenizer.from_pretrained(path)
    for f in ("config.json", "model.safetensors", "generation_config.json"):
        (path / f).unlink(missing_ok=True)
    cfg = Gemma3TextConfig(
        vocab_size=max(len(tok), 320), hidden_size=64, intermediate_size=128, num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS, num_key_value_heads=1, head_dim=D_HEAD, sliding_window=WINDOW,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        max_position_embeddings=128, query_pre_attn_scalar=D_HEAD, initializer_range=0.3,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(cfg).eval()
    model.config.architectures = ["Gemma3ForCausalLM"]
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory) -> Path:
    return write_tiny_gemma3(tmp_path_factory.mktemp("tiny-gemma3"))


@pytest.fixture(scope="module")
def tiny(gemma_dir):
    from transformers import AutoModelForCausalLM

    bridge = load_model(str(gemma_dir))
    bridge.eval()
    hf = AutoModelForCausalLM.from_pretrained(gemma_dir, attn_implementation="eager").eval()
    return bridge, hf


def _batch(n: int = 4, k: int = 3, seed: int = 0, vocab: int = 250, sep: bool = True) -> PromptBatch:
    """Prompts of 13-20 tokens: longer than the sliding window, so local layers cut keys off."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(n):
        pb = PromptBuilder().add([1])
        for i in range(k):
            n_words = int(torch.randint(2, 4, (1,), generator=g))
            pb.demo(torch.randint(10, vocab, (n_words,), generator=g).tolist(), 2, 3 + i % 2, cls=i % 2)
            pb.add([5] if sep else [])
        pb.query(torch.randint(10, vocab, (3,), generator=g).tolist(), 2)
        rows.append(pb.build(target=3 + b % 2, candidates=[3, 4], query_class=b % 2))
    return PromptBatch.concat(rows).trim()


def test_tiny_gemma_logits_equal_hf(tiny):
    bridge, hf = tiny
    assert (bridge.cfg.n_layers, bridge.cfg.n_heads) == (N_LAYERS, N_HEADS)
    ids = torch.randint(10, 250, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = bridge(ids), hf(ids).logits
    assert theirs.std() > 0.1
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_patterns_show_one_kv_head_and_the_sliding_window(tiny):
    bridge, _ = tiny
    ids = torch.randint(10, 250, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, cache = bridge.run_with_cache(ids, names_filter=lambda n: n.endswith(("hook_pattern", "hook_z")))
    for l in range(N_LAYERS):
        pat = cache[f"blocks.{l}.attn.hook_pattern"][0]  # [head, q, k]
        assert pat.shape == (N_HEADS, 12, 12)
        torch.testing.assert_close(pat.sum(-1), torch.ones(N_HEADS, 12))
        assert cache[f"blocks.{l}.attn.hook_z"].shape[-2:] == (N_HEADS, D_HEAD)  # per query head
        far = torch.ones(12, 12, dtype=torch.bool).tril(-WINDOW)  # keys >= WINDOW positions back
        if l < 2:  # local layers: nothing outside the window
            assert pat[:, far].abs().max() == 0
        else:  # the global layer sees the whole prefix
            assert pat[:, far].abs().max() > 0


def test_zero_ablating_a_query_head_equals_cutting_its_o_proj_columns(tiny):
    """GQA with one K/V head: hook_z has one slot per *query* head, and ablating slot h is the same as
    removing that query head's columns from o_proj in the Hugging Face model."""
    import copy

    bridge, hf = tiny
    batch = _batch()
    layer, head = 1, 2
    with torch.no_grad(), I.intervene(bridge, [I.ablate(layer, head, "zero")], batch):
        ours = bridge(batch.tokens)
    cut = copy.deepcopy(hf)
    with torch.no_grad():
        cut.model.layers[layer].self_attn.o_proj.weight[:, head * D_HEAD:(head + 1) * D_HEAD] = 0
        theirs = cut(batch.tokens).logits
        base = hf(batch.tokens).logits
    real = batch.attention_mask
    assert (theirs - base)[real].abs().max() > 1e-3  # the head matters
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-4, rtol=1e-4)


def test_knockout_cuts_information_flow_across_local_and_global_layers(tiny):
    """Blocking every query's attention to the demonstrations' labels in every layer makes the
    read-out blind to the label tokens: changing them leaves the read-out logits unchanged."""
    from dataclasses import replace

    bridge, _ = tiny
    batch = _batch(sep=False)  # every position after BOS has a role: demo or query
    other = batch.tokens.clone()
    lab = batch.role_mask("label")
    other[lab] = 200
    moved = replace(batch, tokens=other)
    rows = torch.arange(batch.batch_size)
    iv = [I.knockout("demo", "label", range(N_LAYERS)), I.knockout("query", "label", range(N_LAYERS))]
    with torch.no_grad():
        plain = bridge(batch.tokens)[rows, batch.readout], bridge(other)[rows, batch.readout]
        with I.intervene(bridge, iv, batch):
            a = bridge(batch.tokens)[rows, batch.readout]
        with I.intervene(bridge, iv, moved):
            b = bridge(other)[rows, batch.readout]
    assert (plain[0] - plain[1]).abs().max() > 1e-3
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_batched_sweep_and_patching_equal_looped(tiny):
    bridge, _ = tiny
    batch = _batch(seed=3)
    ivs = (I.all_heads(N_LAYERS, N_HEADS, mode="zero")
           + [I.knockout("readout", "label", [0, 1]), I.random_control(I.knockout("readout", "label", [2]), 1)])
    with torch.no_grad():
        looped = S.sweep_looped(bridge, batch, ivs, P.target_logprob)
        batched = S.sweep(bridge, batch, ivs, P.target_logprob)
    torch.testing.assert_close(batched, looped, atol=1e-4, rtol=1e-4)
    assert looped.std() > 0
    act = P.activation_patching(bridge, batch, P.target_logprob, mode="zero")
    assert act.shape == (N_LAYERS, N_HEADS)
    torch.testing.assert_close(act.flatten(), looped[: N_LAYERS * N_HEADS] - _clean(bridge, batch),
                               atol=1e-4, rtol=1e-4)


def _clean(bridge, batch):
    with torch.no_grad():
        return P.target_logprob(bridge(batch.tokens)[torch.arange(batch.batch_size), batch.readout], batch)


def test_resuming_skips_the_blocks_below_on_gemma(tiny):
    """Hugging Face decoder layers (tensor outputs, local/global attention) are skipped too."""
    bridge, _ = tiny
    for start in (1, 2):
        check_resume_skips_blocks(bridge, _batch().tokens, start)


def test_head_scores_capture_and_vectors_run(tiny):
    from circuits import vectors
    from probes.capture import capture
    from probes.heads import induction_scores, previous_token_scores

    bridge, _ = tiny
    ind = induction_scores(bridge, seg_len=6, batch=4)
    assert ind.scores.shape == (N_LAYERS, N_HEADS) and torch.isfinite(ind.scores).all()
    toks = torch.randint(10, 250, (2, 10), generator=torch.Generator().manual_seed(4))
    prev = previous_token_scores(bridge, toks)
    assert prev.scores.shape == (N_LAYERS, N_HEADS)
    batch = _batch(seed=5)
    cap = capture(bridge, batch, "attention patterns", roles=["readout"])
    with torch.no_grad():
        _, cache = bridge.run_with_cache(batch.tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    for key, val in cap.data.items():  # the rows at the read-out equal the full pattern's rows
        full = cache[f"blocks.{key.layer}.attn.hook_pattern"][torch.arange(batch.batch_size), :, batch.readout]
        got = val[:, 0] if key.head is None else val[:, 0]
        want = full if key.head is None else full[:, key.head]
        torch.testing.assert_close(got.reshape(want.shape), want, atol=1e-5, rtol=1e-5)
    assert {k.layer for k in cap.data} == set(range(N_LAYERS))
    mean_z = vectors.mean_head_outputs(bridge, batch)
    fv = vectors.function_vector(bridge, mean_z, [(0, 1), (2, 3)])
    assert fv.shape == (bridge.cfg.d_model,) and fv.norm() > 0
    tv = vectors.task_vector(bridge, batch, [1], site="resid_post")
    assert tv.shape[-1] == bridge.cfg.d_model


def test_function_vector_enters_gemmas_residual_stream_through_the_post_attention_norm(tiny):
    """Gemma RMS-normalises the attention output before the residual stream, so a function vector
    made of raw W_O z is in the wrong space. With the norm's gain, the "function vector" of every
    head of a layer on one prompt is exactly what that layer's attention adds to the residual
    stream (ln1_post's output at the read-out); without it, it is the pre-norm attention output."""
    from circuits import vectors

    bridge, _ = tiny
    one = _batch(n=1, seed=6)
    mean_z = vectors.mean_head_outputs(bridge, one)
    gain = vectors.post_attention_gain(bridge, one)
    assert gain is not None and gain.shape == (N_LAYERS, bridge.cfg.d_model)
    with torch.no_grad():
        _, cache = bridge.run_with_cache(one.tokens, names_filter=lambda n: "ln1_post.hook_" in n)
    for layer in range(N_LAYERS):
        heads = [(layer, h) for h in range(N_HEADS)]
        added = cache[f"blocks.{layer}.ln1_post.hook_out"][0, int(one.readout[0])]
        raw = cache[f"blocks.{layer}.ln1_post.hook_in"][0, int(one.readout[0])]
        torch.testing.assert_close(vectors.function_vector(bridge, mean_z, heads, gain), added,
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(vectors.function_vector(bridge, mean_z, heads), raw, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(added, raw, atol=1e-3)
    assert vectors.post_attention_gain(tiny_bridge(attn_only=False, seed=1), one.select([0])) is None


def test_circuit_runs_on_tiny_gemma(tiny):
    from circuits.icl_circuit import run_circuit

    bridge, _ = tiny
    df = run_circuit(bridge, _batch(n=8, seed=6), seed=0, window=(0.0, 0.7))
    assert {"step", "metric", "value"} <= set(df.columns) and df["value"].notna().any()


# ---------------------------------------------------------------------- gemma3-270m itself (slow)
@pytest.fixture(scope="module")
def gemma():
    return load_model("gemma3-270m")


@pytest.mark.slow
def test_gemma_card_and_shape(gemma):
    card = gemma.card
    assert card["hub_name"] == "google/gemma-3-270m"
    assert (gemma.cfg.n_layers, gemma.cfg.n_heads, gemma.cfg.d_model) == (18, 4, 640)
    assert "Gemma Terms of Use" in card["license"]
    if card["source"] == "gguf":
        assert "Q4_K_M" in card["quantization"]
        path = Path(card["path"])
        saved = json.loads((path / "card.json").read_text())
        assert saved["gguf_sha256"] == card["gguf_sha256"] == (
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818")
        assert json.loads((path / "config.json").read_text())["architectures"] == ["Gemma3ForCausalLM"]


@pytest.mark.slow
def test_gemma_logits_match_hf(gemma):
    from transformers import AutoModelForCausalLM

    source = gemma.card.get("path", gemma.card["hub_name"])
    hf = AutoModelForCausalLM.from_pretrained(source, attn_implementation="eager").eval()
    ids = torch.tensor([gemma.tokenizer.encode("The capital of France is")])  # with <bos>
    with torch.no_grad():
        ours, theirs = gemma(ids), hf(ids).logits
    assert theirs.std() > 1.0
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    top = gemma.tokenizer.decode([int(ours[0, -1].argmax())])
    few = torch.tensor([gemma.tokenizer.encode("France: Paris\nJapan: Tokyo\nItaly: Rome\nGermany:")])
    with torch.no_grad():
        assert gemma.tokenizer.decode([int(gemma(few)[0, -1].argmax())]) == " Berlin"
    assert top in (" the", " a", " Paris")


def test_app_and_studies_run_a_suite_task_on_tiny_gemma(tiny):
    """The app's task list and circuit page, the ICL-vector study and ICL vs GD accept fv: tasks
    on a Gemma 3 model (text tasks: the tiny model's own BPE tokenizer)."""
    from experiments.studies import vectors_study
    from experiments.studies.gd import GDConfig
    from experiments.studies.icl_vs_gd import compare_icl_gd
    from experiments.tasks import task_batch
    from iclwb_app import circuit_view, prompting

    bridge, _ = tiny
    names = prompting.available_tasks(bridge)
    assert "fv:present-past" in names and "language:sentiment" in names
    assert "fv:sentiment" in prompting.circuit_tasks(bridge)
    df = circuit_view.circuit_run(bridge, "tiny-gemma", "fv:present-past", 2, 6, window=(0.0, 0.7))
    assert (df["task"] == "fv:present-past").all() and df["value"].notna().any()
    out = vectors_study.run_study(bridge, "tiny-gemma", "fv:present-past", k=2, n_prompts=6,
                                  methods=("task_vector", "function_vector"), layers=[1], n_heads=2,
                                  n_aie_prompts=2)
    assert set(out["summary"]["method"]) == {"task_vector", "function_vector"}
    batch = task_batch("fv:present-past", 2, 3, 0, tokenizer=bridge.tokenizer)
    res = compare_icl_gd(bridge, batch, ks=[2], n_prompts=3, gd=GDConfig(epochs=1), n_perms=0)
    assert {"acc_icl", "acc_gd", "topk_overlap"} <= set(res["metric"])

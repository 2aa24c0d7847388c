"""Batched all-heads patching sweep vs TransformerLens's own patching (one forward per head).

For a zoo model (icl-classify if trained, else induction-2l) and a GPT-2-small-sized random-init
TransformerBridge: patch every head's ``hook_z`` (all positions) from a source run into a target
run and measure a read-out metric, once with ``circuits.sweeps.sweep`` (one forward on the
target and source rows together, then every head's edit resumes from layer l's hook_z, batched
along the batch axis, with the last layer computed only at the read-out query) and once with
``transformer_lens.patching.get_act_patch_attn_head_out_all_pos`` (one ``run_with_hooks`` per
head; it works on a TransformerBridge in eval mode). Then attribution patching vs activation
patching on icl-classify (Spearman over heads on ``--attr-prompts`` prompt pairs, default 64, and
the speed ratio; the Spearman on the 8-prompt sweep batch is printed too, for reference).

    python bench/ablation_sweep.py [--quick]

Prints, last, one per line: sweep_speedup_zoo, sweep_speedup_gpt2_small, sweep_max_abs_diff,
attribution_spearman, attribution_speedup.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import torch
from scipy.stats import spearmanr

from circuits import patching as P
from circuits.sweeps import sweep
from probes.prompt import PromptBatch, PromptBuilder


def random_prompts(n: int, k: int, vocab: int, seed: int, x_len: int = 3) -> PromptBatch:
    """Fixed-layout prompts of random tokens (BOS x ':' y '|' ... x_q ':'), two candidate labels."""
    g = torch.Generator().manual_seed(seed)
    lo = 10
    rows = []
    for b in range(n):
        pb = PromptBuilder().add([1])
        for i in range(k):
            pb.demo(torch.randint(lo, vocab, (x_len,), generator=g).tolist(), 2, 3 + (i + b) % 2)
            pb.add([5])
        pb.query(torch.randint(lo, vocab, (x_len,), generator=g).tolist(), 2)
        rows.append(pb.build(target=3 + b % 2, candidates=[3, 4]))
    return PromptBatch.concat(rows)


def resample_text(batch: PromptBatch, vocab: int, seed: int) -> PromptBatch:
    """Same layout, new text tokens: a source run for patching."""
    toks = batch.tokens.clone()
    text = batch.role_mask("demo_text") | batch.role_mask("query_text")
    toks[text] = torch.randint(10, vocab, (int(text.sum()),), generator=torch.Generator().manual_seed(seed))
    return replace(batch, tokens=toks)


def tl_patching(model, target: PromptBatch, source: PromptBatch, metric) -> torch.Tensor:
    from transformer_lens import patching

    _, cache = model.run_with_cache(source.tokens, names_filter=lambda n: n.endswith("attn.hook_z"))
    rows = torch.arange(target.batch_size)

    def tl_metric(logits):
        return metric(logits[rows, target.readout], target)

    return patching.get_act_patch_attn_head_out_all_pos(model, target.tokens, cache, tl_metric)


def ours(model, target: PromptBatch, source: PromptBatch, metric) -> torch.Tensor:
    L, H = model.cfg.n_layers, model.cfg.n_heads
    ivs = P.head_interventions(model, "patch")
    return sweep(model, target, ivs, metric, source=source, max_rows=512).reshape(L, H)


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def compare(name: str, model, target, source, metric, repeat: int) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        ours(model, target, source, metric)  # warm-up (also the resume check)
        a, t_ours = timed(lambda: ours(model, target, source, metric), repeat)
        b, t_tl = timed(lambda: tl_patching(model, target, source, metric), repeat)
    diff = float((a - b).abs().max())
    print(f"[{name}] {model.cfg.n_layers}x{model.cfg.n_heads} heads, batch {target.batch_size}x"
          f"{target.seq_len}: ours {t_ours:.3f}s, TL patching {t_tl:.3f}s, max|diff| {diff:.2e}")
    return t_tl / t_ours, diff


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller GPT-2-sized batch")
    ap.add_argument("--zoo-prompts", type=int, default=8,
                    help="clean/corrupt prompt pairs for the zoo model (the speed-up shrinks as the "
                         "batch grows: on CPU a large batch is compute-bound either way)")
    ap.add_argument("--attr-prompts", type=int, default=64,
                    help="prompt pairs for attribution vs activation patching on icl-classify (the "
                         "rank correlation over 8 heads of a mean over only 8 prompts is mostly noise)")
    ap.add_argument("--zoo-only", action="store_true", help="skip the GPT-2-sized model and attribution")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    torch.manual_seed(0)
    from experiments.models.loading import load_model
    from experiments.models.zoo import build_model, checkpoint_path

    zoo_name = "icl-classify" if (checkpoint_path("icl-classify") / "card.json").exists() else "induction-2l"
    zoo = load_model(zoo_name)
    zoo.eval()
    if zoo_name == "icl-classify":
        from experiments.tasks import classify

        tgt = classify.make_prompts(k=4, n_prompts=args.zoo_prompts, seed=0, n_way=2)
        src = classify.make_prompts(k=4, n_prompts=args.zoo_prompts, seed=0, n_way=2, variant="flipped")
    else:
        V = zoo.cfg.d_vocab
        tgt = random_prompts(args.zoo_prompts, 4, V, seed=0)
        src = resample_text(tgt, V, seed=1)
    tgt, src = tgt.trim(), src.trim()
    speed_zoo, diff_zoo = compare(zoo_name, zoo, tgt, src, P.logit_diff, repeat=3)

    gpt2 = build_model("bridge-native", dict(
        d_model=768, n_layers=12, n_heads=12, d_head=64, d_mlp=3072, n_ctx=1024, d_vocab=50257,
        act_fn="gelu", normalization_type="LN", seed=0))
    if args.zoo_only:
        print(f"sweep_speedup_zoo: {speed_zoo:.2f}")
        print(f"sweep_max_abs_diff: {diff_zoo:.2e}")
        return
    n = 2 if args.quick else 4
    g_t = random_prompts(n, 3, 50257, seed=0)
    g_s = resample_text(g_t, 50257, seed=1)
    speed_gpt2, diff_gpt2 = compare("gpt2-small-random", gpt2, g_t.trim(), g_s.trim(), P.logit_diff, repeat=1)
    del gpt2

    # attribution vs activation patching (all heads, all positions, flipped-label source)
    if zoo_name == "icl-classify":
        a_tgt = classify.make_prompts(k=4, n_prompts=args.attr_prompts, seed=1, n_way=2).trim()
        a_src = classify.make_prompts(k=4, n_prompts=args.attr_prompts, seed=1, n_way=2, variant="flipped").trim()
    else:
        a_tgt, a_src = tgt, src
    with torch.no_grad():
        act, t_act = timed(lambda: P.activation_patching(zoo, a_tgt, P.logit_diff, source=a_src), 3)
    attr, t_attr = timed(lambda: P.attribution_patching(zoo, a_tgt, P.logit_diff, source=a_src), 3)
    rho = float(spearmanr(act.flatten().numpy(), attr.flatten().numpy()).statistic)
    with torch.no_grad():
        act8 = P.activation_patching(zoo, tgt, P.logit_diff, source=src)
    attr8 = P.attribution_patching(zoo, tgt, P.logit_diff, source=src)
    rho8 = float(spearmanr(act8.flatten().numpy(), attr8.flatten().numpy()).statistic)
    print(f"[{zoo_name}] {a_tgt.batch_size} prompt pairs: activation patching {t_act:.3f}s, "
          f"attribution patching {t_attr:.3f}s (Spearman on the {tgt.batch_size}-prompt sweep batch: {rho8:.3f})")
    print("activation:", [round(v, 3) for v in act.flatten().tolist()])
    print("attribution:", [round(v, 3) for v in attr.flatten().tolist()])

    print(f"sweep_speedup_zoo: {speed_zoo:.2f}")
    print(f"sweep_speedup_gpt2_small: {speed_gpt2:.2f}")
    print(f"sweep_max_abs_diff: {max(diff_zoo, diff_gpt2):.2e}")
    print(f"attribution_spearman: {rho:.3f}")
    print(f"attribution_speedup: {t_act / t_attr:.2f}")


if __name__ == "__main__":
    main()

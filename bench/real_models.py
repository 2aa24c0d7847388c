"""Speed on the real models (smollm2-135m, gemma3-270m), and the bfloat16 mode's agreement.

    python bench/real_models.py [--models smollm2-135m gemma3-270m] [--n-patch 4] [--n-circuit 16]
                                [--n-bf16 32] [--parts patching circuit bf16]

(a) **patching**: every head's ``hook_z`` (all positions) patched from a source run (the same
    fv:present-past prompts at k = 4 with their demonstration and query words shuffled among
    themselves, so positions line up) with ``circuits.patching.activation_patching`` (batched ``sweep``) against
    TransformerLens's ``patching.get_act_patch_attn_head_out_all_pos`` (one forward per head) on
    the same prompts; both give the change of the mean log-prob of the correct answer (over the
    whole vocabulary) at the read-out.
    Speed-up = TL time / ours; the results must agree within 1e-4.
(b) **circuit**: ``circuits.icl_circuit.run_circuit`` (all steps, default window) on
    fv:present-past at k = 4 against the bare forward passes it cannot avoid: the unablated batch, its
    zero-shot and wrong-label versions, and one forward of the batch per intervention (5 knockouts
    + 5 controls), timed as plain ``model(tokens)`` calls. Ratio = circuit / bare (target <= 1.3).
(c) **bf16**: the same circuit in float32 and in bfloat16 (the sweep's ``precision = "bfloat16"``)
    on ``--n-bf16`` prompts: the speed-up, the unablated accuracy difference with its paired
    interval (``probes.stats.paired``, McNemar), the largest difference of the knockout effects,
    and the Spearman correlation of the induction head scores in both precisions.

Times are CPU seconds of the bench's process on one torch thread (``BENCH_THREADS`` to change), so
a job running beside it on a shared machine does not bias the ratios; wall times are printed too.

Prints, last, one per line as ``name: value``: per model ``patching_speedup_<m>``,
``patching_max_abs_diff_<m>``, ``circuit_overhead_<m>``, ``bf16_speedup_<m>``,
``bf16_acc_diff_<m>`` (with its interval), ``bf16_max_knockout_effect_diff_<m>``,
``bf16_induction_spearman_<m>``.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import torch
from scipy.stats import spearmanr

from circuits import patching as P
from probes.prompt import PromptBatch

TASK = "fv:present-past"


def answer_logprob(logits: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
    """Mean log-probability of the correct answer's token over the whole vocabulary."""
    return logits.float().log_softmax(-1).gather(1, batch.target[:, None].to(logits.device))[:, 0].mean()


def timed(fn, repeat: int = 1):
    """``fn()``'s result and its best CPU and wall times (seconds) over ``repeat`` calls.

    CPU time, not wall time: these machines are shared, and a job beside the bench stretches the wall
    time of whichever side it overlaps. With ``BENCH_THREADS=1`` (the default) the CPU time is the
    compute the call needs. The ratios use CPU time; the wall times are printed beside them.
    """
    best, best_wall, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        t, w = time.process_time(), time.perf_counter()
        out = fn()
        best = min(best, time.process_time() - t)
        best_wall = min(best_wall, time.perf_counter() - w)
    return out, best, best_wall


def prompts(model, n: int, seed: int = 0) -> PromptBatch:
    from experiments import tasks

    return tasks.task_batch(TASK, 4, n, seed, tokenizer=model.tokenizer).trim()


def resample_text(batch: PromptBatch, seed: int) -> PromptBatch:
    """Same layout, other words: each demonstration / query text token replaced by a random token
    drawn from the batch's own text tokens (a corrupted run for patching)."""
    toks = batch.tokens.clone()
    text = batch.role_mask("demo_text") | batch.role_mask("query_text")
    pool = toks[text]
    g = torch.Generator().manual_seed(seed)
    toks[text] = pool[torch.randint(0, len(pool), (int(text.sum()),), generator=g)]
    return replace(batch, tokens=toks)


# ------------------------------------------------------------------------------ (a) patching
def patching_part(name: str, model, n: int) -> tuple[float, float]:
    from transformer_lens import patching

    tgt = prompts(model, n, seed=0)
    src = resample_text(tgt, seed=1)
    rows = torch.arange(tgt.batch_size)

    def ours():
        return P.activation_patching(model, tgt, answer_logprob, source=src, mode="patch")

    def tl():
        _, cache = model.run_with_cache(src.tokens, names_filter=lambda x: x.endswith("attn.hook_z"))
        base = answer_logprob(model(tgt.tokens)[rows, tgt.readout], tgt)
        out = patching.get_act_patch_attn_head_out_all_pos(
            model, tgt.tokens, cache, lambda logits: answer_logprob(logits[rows, tgt.readout], tgt))
        return out - base

    with torch.no_grad():
        a, t_ours, w_ours = timed(ours)
        b, t_tl, w_tl = timed(tl)
    diff = float((a - b).abs().max())
    print(f"[{name}] patching {model.cfg.n_layers}x{model.cfg.n_heads} heads, batch "
          f"{tgt.batch_size}x{tgt.seq_len}: ours {t_ours:.1f} CPU-s ({w_ours:.1f}s wall), "
          f"TL {t_tl:.1f} CPU-s ({w_tl:.1f}s wall), max|diff| {diff:.2e}, "
          f"largest effect {float(a.abs().max()):.3f}", flush=True)
    return t_tl / t_ours, diff


# ------------------------------------------------------------------------------ (b) circuit
def circuit_part(name: str, model, n: int) -> float:
    from circuits.icl_circuit import (
        ABLATIONS,
        run_circuit,
        wrong_label_batch,
    )

    batch = prompts(model, n, seed=2)
    with torch.no_grad():
        _, t_circ, _ = timed(lambda: run_circuit(model, batch, seed=0))
        zs, wrong = batch.zero_shot().trim(), wrong_label_batch(batch, 0).trim()
        _, t_one, _ = timed(lambda: model(batch.tokens), 2)
        _, t_zs, _ = timed(lambda: model(zs.tokens), 2)
        _, t_wrong, _ = timed(lambda: model(wrong.tokens), 2)
    n_iv = 2 * len(ABLATIONS)
    bare = t_one * (1 + n_iv) + t_zs + t_wrong
    print(f"[{name}] circuit on {n} prompts ({batch.seq_len} tokens): {t_circ:.1f} CPU-s; bare forwards "
          f"{bare:.1f} CPU-s (1 + {n_iv} interventions x {t_one:.2f}s, zero-shot {t_zs:.2f}s, wrong labels "
          f"{t_wrong:.2f}s)", flush=True)
    return t_circ / bare


# ------------------------------------------------------------------------------ (c) bfloat16
def bf16_part(name: str, n: int) -> dict[str, float | str]:
    from circuits.icl_circuit import run_circuit
    from experiments.models.loading import load_model
    from probes import stats
    from probes.heads import induction_scores

    out: dict[str, float | str] = {}
    res, times, ind = {}, {}, {}
    for prec in ("float32", "bfloat16"):
        model = load_model(name)
        model.eval()
        if prec == "bfloat16":
            model.to(torch.bfloat16)
        batch = prompts(model, n, seed=3)
        with torch.no_grad():
            res[prec], times[prec], _ = timed(lambda: run_circuit(model, batch, seed=0, steps=("ablation",)))
            ind[prec] = induction_scores(model, seg_len=20, batch=8, seed=0).scores.float().flatten()
    f, b = res["float32"], res["bfloat16"]

    def per_prompt(df, metric):
        d = df[(df.metric == metric) & (df.prompt >= 0)].sort_values("prompt")
        return d["value"].to_numpy()
    acc = stats.paired(per_prompt(b, "acc:unablated"), per_prompt(f, "acc:unablated"))
    means = {p: d[d.prompt < 0].set_index("metric")["value"] for p, d in res.items()}
    effects = []
    for m in means["float32"].index:
        if m.startswith("acc:") and not m.endswith(":random") and m not in ("acc:unablated", "acc:zero_shot"):
            rnd = m + ":random"
            eff = {p: means[p][m] - means[p][rnd] for p in means}
            effects.append(abs(eff["bfloat16"] - eff["float32"]))
    out["speedup"] = times["float32"] / times["bfloat16"]
    out["acc_diff"] = (f"{acc.effect:+.3f} [{acc.effect_ci_low:+.3f}, {acc.effect_ci_high:+.3f}] "
                       f"(n={acc.n}, McNemar p={acc.p_value:.2g}; fp32 {acc.control_value:.3f}, bf16 {acc.value:.3f})")
    out["max_knockout_effect_diff"] = max(effects) if effects else float("nan")
    out["induction_spearman"] = float(spearmanr(ind["float32"].numpy(), ind["bfloat16"].numpy()).statistic)
    print(f"[{name}] bf16 vs fp32 on {n} prompts: circuit ablations {times['float32']:.1f} vs "
          f"{times['bfloat16']:.1f} CPU-s; unablated accuracy bf16 - fp32 {out['acc_diff']}; knockout "
          f"effects differ by at most {out['max_knockout_effect_diff']:.3f}; induction-score Spearman "
          f"{out['induction_spearman']:.3f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--parts", nargs="+", default=["patching", "circuit", "bf16"])
    ap.add_argument("--n-patch", type=int, default=4, help="prompts of the patching comparison")
    ap.add_argument("--n-circuit", type=int, default=16, help="prompts of the circuit overhead run")
    ap.add_argument("--n-bf16", type=int, default=32, help="prompts of the bf16 agreement pilot")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    from experiments.models.loading import load_model

    lines: list[str] = []
    for name in args.models:
        tag = name.replace("-", "_")
        if {"patching", "circuit"} & set(args.parts):
            model = load_model(name)
            model.eval()
            if "patching" in args.parts:
                speed, diff = patching_part(name, model, args.n_patch)
                lines += [f"patching_speedup_{tag}: {speed:.2f}", f"patching_max_abs_diff_{tag}: {diff:.2e}"]
            if "circuit" in args.parts:
                lines.append(f"circuit_overhead_{tag}: {circuit_part(name, model, args.n_circuit):.2f}")
            del model
        if "bf16" in args.parts:
            r = bf16_part(name, args.n_bf16)
            lines += [f"bf16_speedup_{tag}: {r['speedup']:.2f}", f"bf16_acc_diff_{tag}: {r['acc_diff']}",
                      f"bf16_max_knockout_effect_diff_{tag}: {r['max_knockout_effect_diff']:.3f}",
                      f"bf16_induction_spearman_{tag}: {r['induction_spearman']:.3f}"]
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()

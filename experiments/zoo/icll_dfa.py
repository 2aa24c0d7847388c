"""``icll-dfa``: a small transformer trained on in-context language learning (random DFAs).

Task: ``experiments.tasks.icll`` (Akyürek et al. 2024, scaled down): every training sequence is
``[BOS] w_1 | w_2 | ...`` (<= 128 tokens, strings of 1-24 letters) from a fresh random DFA that
is not in the held-out set. Next-token loss on letter targets only ('|' and padding targets are
masked, as in the paper). The model must infer each prompt's language in context; the expected
mechanism is n-gram heads (attend to earlier positions preceded by the current token(s), copy
their successor), the bigram case of which is an induction head.

Evaluation (card ``metrics``): DFA accuracy and L1 distance on ``N_EVAL`` held-out-DFA sequences,
beside the in-context 1/2/3-gram baselines on the very same sequences.
"""

from __future__ import annotations

import functools
import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from experiments.tasks import icll
from experiments.zoo import CHECKPOINT_DIR, TrainResult, ZooSpec, load_zoo_model, read_card
from experiments.zoo.series import Recorder
from experiments.zoo.training import fit
from probes import stats

CONFIG = dict(
    d_model=64, n_layers=4, n_heads=4, d_head=16, d_mlp=256, n_ctx=icll.MAX_LEN,
    d_vocab=icll.VOCAB_SIZE, attn_only=False, act_fn="gelu", normalization_type="LN",
    positional_embedding_type="standard",
)
BATCH = 32
LR = 3e-3
WARMUP = 200
DEFAULT_STEPS = 15000
N_EVAL = 128
EVAL_SEED = 77
TRACK_EVERY = 1000  # held-out accuracy / L1 logged during training (card: metrics.heldout_curve)


def loss_fn(model: torch.nn.Module, seqs: icll.ICLLSequences) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose next token is a letter."""
    logits = model(seqs.tokens)
    tgt = seqs.targets
    mask = tgt < icll.N_LETTERS
    return torch.nn.functional.cross_entropy(logits[mask], tgt[mask])


PROBE_SEED = 4040
PROBE_N = 32


def probe_loss(model: torch.nn.Module) -> float:
    """Letter-target loss on 32 fixed training-distribution sequences (seed 4040)."""
    with torch.no_grad():
        return float(loss_fn(model, _probe_batch()))


@functools.lru_cache(maxsize=1)
def _probe_batch() -> icll.ICLLSequences:
    return icll.sample_sequences(PROBE_N, seed=PROBE_SEED, split="train")


def train(seed: int = 0, steps: int | None = None, progress: bool = True,
          recorder: Recorder | None = None) -> TrainResult:
    from experiments.zoo import build_model

    steps = steps or DEFAULT_STEPS
    torch.manual_seed(seed)
    config = {**CONFIG, "seed": seed}
    model = build_model("bridge-native", config)
    rng = random.Random(seed)

    curve: list[dict] = []

    def loss_at(step: int) -> torch.Tensor:
        if step and step % TRACK_EVERY == 0:
            curve.append(track(model, step))
        return loss_fn(model, icll.sample_sequences(BATCH, seed=rng.randrange(2**31), split="train"))

    fitted = fit(model, loss_at, steps, LR, WARMUP, "icll-dfa", progress, recorder=recorder)
    metrics = evaluate(model)
    metrics["final_train_loss_ema"] = round(fitted.loss_ema, 4)
    metrics["heldout_curve"] = curve + [{"step": steps, "accuracy": metrics["heldout_accuracy"],
                                         "l1": metrics["heldout_l1"]}]
    return TrainResult(
        model=model,
        arch="bridge-native",
        config=config,
        task={"name": "icll", "module": "experiments.tasks.icll", "max_len": icll.MAX_LEN,
              "string_len": list(icll.STRING_LEN), "n_strings": list(icll.N_STRINGS),
              "n_states": list(icll.N_STATES), "alphabet_size": list(icll.ALPHABET_SIZE),
              "out_edges": list(icll.OUT_EDGES), "heldout": {"n": icll.N_HELDOUT,
                                                             "seed": icll.HELDOUT_SEED},
              "batch": BATCH, "optimizer": "AdamW(wd=0.01), grad clip 1.0", "lr": LR,
              "schedule": f"linear warmup {WARMUP}, cosine to 0.1 lr"},
        steps=steps,
        metrics=metrics,
        notes=notes(metrics, steps),
        extra={"train_cpu_seconds": round(fitted.cpu_seconds, 1), "torch_threads": torch.get_num_threads()},
    )


def track(model: torch.nn.Module, step: int) -> dict:
    """Held-out accuracy and L1 after ``step`` updates (the card's eval sequences, no baselines),
    printed (flushed) so a long run can be watched against the 3-gram numbers."""
    was_training = model.training
    model.eval()
    m = evaluate(model, baselines=False)
    model.train(was_training)
    row = {"step": step, "accuracy": m["heldout_accuracy"], "l1": m["heldout_l1"]}
    print(f"[icll-dfa] step {step}: held-out accuracy {row['accuracy']:.4f}, L1 {row['l1']:.4f}",
          flush=True)
    return row


def per_sequence(probs: torch.Tensor, seqs: icll.ICLLSequences) -> dict[str, torch.Tensor]:
    """Per-sequence DFA accuracy and L1 (means over each sequence's scored positions)."""
    hit = seqs.legal.gather(-1, probs.argmax(-1, keepdim=True)).squeeze(-1).float()
    u = seqs.legal.float() / seqs.legal.float().sum(-1, keepdim=True).clamp(min=1)
    l1 = (probs - u).abs().sum(-1) + (1 - probs.sum(-1)).clamp(min=0)
    m = seqs.eval_mask.float()
    cnt = m.sum(1).clamp(min=1)
    return {"accuracy": (hit * m).sum(1) / cnt, "l1": (l1 * m).sum(1) / cnt}


def evaluate(model: torch.nn.Module, n: int = N_EVAL, seed: int = EVAL_SEED,
             baselines: bool = True) -> dict:
    """Held-out DFA accuracy and L1 (pooled over scored positions), and with ``baselines`` the
    in-context 1/2/3-gram models on the same sequences (``table``: pooled; ``per_sequence``: the
    mean over sequences with a bootstrap 95% interval, ``probes.stats.estimate``) plus paired
    comparisons of the model against the 3-gram model over sequences (``probes.stats.paired``:
    the interval of the difference and a permutation p-value; the unit is the sequence)."""
    seqs = icll.sample_sequences(n, seed=seed, split="heldout")
    probs = icll.model_probs(model, seqs)
    m = icll.evaluate(probs, seqs)
    out: dict = {"heldout_accuracy": round(m["accuracy"], 4), "heldout_l1": round(m["l1"], 4),
                 "n_eval_sequences": n, "eval_seed": seed,
                 "scored_positions": int(seqs.eval_mask.sum())}
    if not baselines:
        return out
    table = {"model": {k: round(v, 4) for k, v in m.items()}}
    per_seq = {"model": per_sequence(probs, seqs)}
    for order in (1, 2, 3):
        bp = _ngram_probs(n, seed, order)
        table[f"{order}-gram"] = {k: round(v, 4) for k, v in icll.evaluate(bp, seqs).items()}
        per_seq[f"{order}-gram"] = per_sequence(bp, seqs)
    out["table"] = table
    out["per_sequence"] = {
        name: {key: _interval(stats.estimate(v[key].numpy(), binary=False)) for key in v}
        for name, v in per_seq.items()}
    vs = {}
    for key in ("accuracy", "l1"):
        c = stats.paired(per_seq["model"][key].numpy(), per_seq["3-gram"][key].numpy())
        vs[key] = {"model": round(c.value, 4), "3-gram": round(c.control_value, 4),
                   "difference": round(c.effect, 4),
                   "ci": [round(c.effect_ci_low, 4), round(c.effect_ci_high, 4)],
                   "p_value": round(c.p_value, 5), "n_sequences": c.n, "test": c.test}
    out["vs_3gram_per_sequence"] = vs
    return out


def _interval(e: Any) -> dict:
    return {"value": round(e.value, 4), "ci": [round(e.ci_low, 4), round(e.ci_high, 4)], "n": e.n}


@functools.lru_cache(maxsize=8)
def _ngram_probs(n: int, seed: int, order: int) -> torch.Tensor:
    """The in-context ``order``-gram probabilities on the held-out eval sequences (cached: the
    baseline does not change over checkpoints)."""
    return icll.ngram_probs(icll.sample_sequences(n, seed=seed, split="heldout"), order)


def dynamics_rows(model: torch.nn.Module, step: int, n: int = N_EVAL, seed: int = EVAL_SEED) -> list[dict]:
    """Dynamics-table rows (``experiments.dynamics``) at one checkpoint: held-out DFA accuracy and
    L1 (mean over the ``n`` eval sequences, bootstrap 95% interval) and the paired difference
    model minus in-context 3-gram model on the same sequences."""
    seqs = icll.sample_sequences(n, seed=seed, split="heldout")
    mine = per_sequence(icll.model_probs(model, seqs), seqs)
    base = per_sequence(_ngram_probs(n, seed, 3), seqs)
    rows = []
    for key in ("accuracy", "l1"):
        e = stats.estimate(mine[key].numpy(), binary=False)
        rows.append({"step": step, "metric": f"heldout_dfa_{key}", "n": e.n, "value": e.value,
                     "ci_low": e.ci_low, "ci_high": e.ci_high})
        c = stats.paired(mine[key].numpy(), base[key].numpy())
        rows.append({"step": step, "metric": f"heldout_dfa_{key}_minus_3gram", "n": c.n,
                     "value": c.effect, "ci_low": c.effect_ci_low, "ci_high": c.effect_ci_high})
    return rows


def notes(metrics: dict, steps: int) -> str:
    """The card's free text: what the numbers mean and where the model stands among the baselines."""
    table = metrics["table"]
    acc, l1 = table["model"]["accuracy"], table["model"]["l1"]
    beaten = [n for n in ("1-gram", "2-gram", "3-gram")
              if acc > table[n]["accuracy"] and l1 < table[n]["l1"]]
    below = [n for n in ("1-gram", "2-gram", "3-gram") if n not in beaten]
    verdict = (f"After {steps} steps the model (DFA accuracy {acc:.3f}, L1 {l1:.3f}) beats the "
               f"in-context {', '.join(beaten) or 'no'} baseline(s) in both accuracy and L1")
    verdict += f" but not the {', '.join(below)} baseline(s) in both." if below else "."
    vs = metrics.get("vs_3gram_per_sequence", {})
    paired = "".join(
        f" Per sequence (n={v['n_sequences']}), model minus 3-gram {key}: {v['difference']:+.3f} "
        f"[{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}] (p={v['p_value']:.2g})." for key, v in vs.items())
    curve = metrics.get("heldout_curve", [])
    crossed = next((r["step"] for r in curve if r["accuracy"] > table["3-gram"]["accuracy"]
                    and r["l1"] < table["3-gram"]["l1"]), None)
    when = (f" Tracked every {TRACK_EVERY} steps (metrics.heldout_curve), the model first beats the "
            f"3-gram model in both at step {crossed}." if crossed else "")
    return ("Metrics on held-out DFAs (languages never seen in training): DFA accuracy (argmax "
            "letter legal) and L1 distance to the uniform legal-next distribution, pooled over "
            f"{metrics['scored_positions']} scored positions of {metrics['n_eval_sequences']} "
            "sequences, beside the in-context n-gram baselines (Katz back-off) on the same "
            "sequences (per-sequence means with bootstrap 95% intervals: metrics.per_sequence). "
            + verdict + f" 3-gram: accuracy {table['3-gram']['accuracy']:.3f}, L1 "
            f"{table['3-gram']['l1']:.3f}." + paired + when +
            " Earlier recipes (d_model 64, 2 layers, warm-up 50): 1200 steps stopped at the 1-gram "
            "level (accuracy 0.524); 4000 steps (531 s on 2 threads) reached the 2-gram level "
            "(accuracy 0.764, L1 0.837 vs 3-gram 0.851 / 0.807 on these sequences).")


def rescore_card(root: Path | None = None) -> dict:
    """Re-evaluate the saved model (``evaluate``: baselines, intervals, paired comparison) and
    rewrite its card's metrics and notes, keeping the training record (``heldout_curve``, the
    final loss) and everything else in the card; returns the new card."""
    card = read_card("icll-dfa", root)
    model = load_zoo_model("icll-dfa", root)
    keep = {k: card["metrics"][k] for k in ("heldout_curve", "final_train_loss_ema") if k in card["metrics"]}
    metrics = {**evaluate(model), **keep}
    card.update(metrics=metrics, notes=notes(metrics, card["steps"]),
                metrics_evaluated_at=time.strftime("%Y-%m-%d"))
    path = (root or CHECKPOINT_DIR) / "icll-dfa" / "card.json"
    path.write_text(json.dumps(card, indent=2) + "\n")
    return card


SPECS = {
    "icll-dfa": ZooSpec(
        name="icll-dfa",
        description="4-layer transformer (d_model 64, MLPs) trained on in-context language "
                    "learning over random DFAs (Akyürek et al. 2024, 128-token prompts); "
                    "compare with in-context n-gram baselines on held-out DFAs.",
        train=train,
    )
}

"""``icl-classify``: a small transformer with MLPs trained on few-shot classification in context.

Task: ``experiments.tasks.classify``. Every training sequence is

    [BOS] x_1 ':' y_1 '|' ... x_8 ':' y_8 '|' x_q ':'

with 2-4 classes per prompt and a class -> label mapping drawn afresh per prompt from 8 label
tokens, so a label is only predictable from the demonstrations. The loss is on every ':' (the
label y_i after i-1 demonstrations, and the query's label), so one sequence trains k = 0..8.

The format is the test bed of the circuit analyses (Cho et al. 2024): x_i -> s_i (summarise the
input at its ':'), s_i -> y_i (merge it into the label), y_i -> s_q (retrieve the label whose
input matches the query's class). Card ``metrics``: accuracy among the labels in use at k = 0,
1, 2, 4, 8 for 2-way and 4-way prompts (chance 1/2 and 1/4), and under flipped labels.
"""

from __future__ import annotations

import functools
import random

import torch

from experiments.models.zoo import TrainResult, ZooSpec, build_model
from experiments.models.zoo.series import Recorder
from experiments.models.zoo.training import fit
from experiments.tasks import classify
from probes.hooked import HookedModel
from probes.readout import model_accuracy

K_TRAIN = 8
CONFIG = dict(
    d_model=64, n_layers=2, n_heads=4, d_head=16, d_mlp=256, n_ctx=64,
    d_vocab=classify.VOCAB_SIZE, attn_only=False, act_fn="gelu", normalization_type="LN",
    positional_embedding_type="standard",
)
BATCH = 64
LR = 1e-3
WARMUP = 100
DEFAULT_STEPS = 6000
N_WAY = (2, 4)
EVAL_KS = (0, 1, 2, 4, 8)
N_EVAL = 500
EVAL_SEED = 4242


def loss_fn(model: HookedModel, tokens: torch.Tensor, pos: torch.Tensor,
            targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the label predicted at every ':' position."""
    logits = model(tokens)
    picked = logits.gather(1, pos[..., None].expand(-1, -1, logits.shape[-1]))
    return torch.nn.functional.cross_entropy(picked.flatten(0, 1), targets.flatten())


PROBE_SEED = 4040


def probe_loss(model: HookedModel) -> float:
    """Label loss at every ':' on 64 fixed training-distribution prompts (k = 8, seed 4040)."""
    toks, pos, tgt = _probe_batch()
    with torch.no_grad():
        return float(loss_fn(model, toks, pos, tgt))


@functools.lru_cache(maxsize=1)
def _probe_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return classify.training_batch(BATCH, K_TRAIN, random.Random(PROBE_SEED), n_way=N_WAY)


def train(seed: int = 0, steps: int | None = None, progress: bool = True,
          recorder: Recorder | None = None) -> TrainResult:

    steps = steps or DEFAULT_STEPS
    torch.manual_seed(seed)
    config = {**CONFIG, "seed": seed}
    model = build_model("bridge-native", config)
    rng = random.Random(seed)

    def loss_at(step: int) -> torch.Tensor:
        k = rng.randint(1, K_TRAIN)  # a mix of lengths: short prompts teach the matching fastest
        toks, pos, tgt = classify.training_batch(BATCH, k, rng, n_way=N_WAY)
        return loss_fn(model, toks, pos, tgt)

    def report(step: int) -> str:
        acc = model_accuracy(model, classify.make_prompts(4, 100, 1, n_way=2))
        return f"step {step + 1}: 2-way k=4 accuracy {acc:.2f}"

    stats = fit(model, loss_at, steps, LR, WARMUP, "icl-classify", progress, every=(250, report),
                recorder=recorder)
    metrics = evaluate(model)
    metrics["final_train_loss_ema"] = round(stats.loss_ema, 4)
    return TrainResult(
        model=model,
        arch="bridge-native",
        config=config,
        task={"name": "classify", "module": "experiments.tasks.classify", "k_train": [1, K_TRAIN],
              "n_way": list(N_WAY), "n_labels": classify.N_LABELS,
              "n_classes": classify.N_CLASSES, "tokens_per_class": classify.TOKENS_PER_CLASS,
              "x_len": classify.X_LEN, "noise": classify.NOISE,
              "batch": BATCH, "optimizer": "AdamW(wd=0.01), grad clip 1.0", "lr": LR,
              "schedule": f"linear warmup {WARMUP}, cosine to 0.1 lr",
              "loss": "cross-entropy at every ':' (each demonstration label and the query)"},
        steps=steps,
        metrics=metrics,
        notes=notes(metrics, steps),
        extra={"train_cpu_seconds": round(stats.cpu_seconds, 1), "torch_threads": torch.get_num_threads()},
    )


def evaluate(model: HookedModel, n: int = N_EVAL, seed: int = EVAL_SEED,
             ks: tuple[int, ...] = EVAL_KS) -> dict:
    table: dict[str, dict[str, float]] = {}
    for n_way in (2, 4):
        for variant in ("standard", "flipped"):
            row = {}
            for k in ks:
                batch = classify.make_prompts(k, n, seed + k, n_way=n_way, variant=variant)
                row[f"k={k}"] = round(model_accuracy(model, batch, batch_size=250), 4)
            table[f"{n_way}-way {variant}"] = row
    std2 = table["2-way standard"]
    return {
        "acc_2way_k0": std2.get("k=0"), "acc_2way_k4": std2.get("k=4"),
        "acc_2way_k8": std2.get("k=8"), "acc_4way_k8": table["4-way standard"].get("k=8"),
        "n_eval_prompts": n, "eval_seed": seed, "table": table,
    }


def notes(metrics: dict, steps: int) -> str:
    """The card's free text: how accuracy is measured and what the table shows."""
    t = metrics["table"]
    s2, f2, s4 = t["2-way standard"], t["2-way flipped"], t["4-way standard"]
    return (f"Accuracy = argmax over the prompt's labels in use (chance 1/n_way), "
            f"{metrics['n_eval_prompts']} prompts per cell, eval seed {metrics['eval_seed']} + k. "
            f"'flipped' permutes the labels of the same prompts: a model that reads the mapping "
            f"from the context keeps its accuracy. After {steps} steps: 2-way accuracy "
            f"{s2['k=0']:.2f} at k=0 (chance 0.50) -> {s2['k=4']:.2f} at k=4 -> {s2['k=8']:.2f} "
            f"at k=8, flipped {f2['k=8']:.2f} at k=8; 4-way {s4['k=0']:.2f} at k=0 (chance 0.25) "
            f"-> {s4['k=8']:.2f} at k=8. The model sits on a label-copying plateau (loss ~1.57) "
            f"for ~1000 steps before the matching circuit forms.")


SPECS = {
    "icl-classify": ZooSpec(
        name="icl-classify",
        description="2-layer transformer with MLPs (d_model 64) trained on few-shot "
                    "classification with a random class->label mapping per prompt: "
                    "[BOS] x ':' y '|' ... x_q ':' (the circuit-analysis test bed).",
        train=train,
    )
}

"""``icl-transience``: is in-context learning transient at 2-core scale? (Singh et al. 2023)

A classification variant of ``icl-classify`` whose training mixes two kinds of sequences
(after Chan et al. 2022 and Singh et al. 2023)::

    [BOS] x_1 ':' y_1 '|' ... x_8 ':' y_8 '|' x_q ':'        (35 tokens; x = one class token)

- ``N_TRAIN`` = 64 training classes, each with a *fixed* label ``c mod 8`` among 8 label tokens,
  so every label is learnable in the weights;
- *bursty* sequences (share ``P_BURSTY``): the 8 demonstrations come from the query's class and
  one other class (the query's class at least once): the label is available in context and in
  the weights;
- *in-weights* sequences (the rest): the demonstrations come from other classes; only the
  weights know the query's label.

The loss is on every ':' (each demonstration's label and the query's). Evaluations over
training (``dynamics_rows``, used by ``experiments.studies.dynamics``):

- ``icl_heldout_accuracy``: 2-way prompts over ``N_HELDOUT`` = 16 classes never trained on, with
  two labels drawn per prompt and assigned at random (both classes in the demonstrations):
  only in-context learning helps (chance 1/2; argmax over the two labels);
- ``iwl_accuracy``: a training class queried with no demonstration of its class (demonstrations
  from other training classes): only in-weights learning helps (chance 1/8; argmax over the
  8 labels).

Singh et al. saw ICL emerge, then fade as in-weights learning took over, over ~1e5+ steps of
Omniglot training; here the question is whether the same shows at this size.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from experiments.models.zoo import TrainResult, ZooSpec, build_model
from experiments.models.zoo.series import Recorder
from experiments.models.zoo.training import fit
from probes import stats
from probes.hooked import HookedModel

PAD, BOS, COLON, SEP = 0, 1, 2, 3
N_LABELS = 8
LABEL0 = 4
CLASS0 = LABEL0 + N_LABELS
N_TRAIN = 64
N_HELDOUT = 16
VOCAB_SIZE = CLASS0 + N_TRAIN + N_HELDOUT  # 92
K = 8
SEQ_LEN = 3 + 4 * K
P_BURSTY = 0.9
CONFIG = dict(
    d_model=64, n_layers=2, n_heads=4, d_head=16, d_mlp=256, n_ctx=64, d_vocab=VOCAB_SIZE,
    attn_only=False, act_fn="gelu", normalization_type="LN", positional_embedding_type="standard",
)
BATCH = 64
LR = 1e-3
WARMUP = 100
DEFAULT_STEPS = 1500
N_EVAL = 500
EVAL_SEED = 5151
PROBE_SEED = 4040
COLON_POS = torch.tensor([2 + 4 * i for i in range(K + 1)])


def fixed_label(c: torch.Tensor) -> torch.Tensor:
    """The in-weights label token of training class index ``c`` (0..N_TRAIN-1)."""
    return LABEL0 + c % N_LABELS


def _layout(demo_cls: torch.Tensor, demo_lab: torch.Tensor, q_cls: torch.Tensor) -> torch.Tensor:
    """Token rows from class-token ids [B, K], label tokens [B, K] and query class tokens [B]."""
    B = demo_cls.shape[0]
    toks = torch.full((B, SEQ_LEN), SEP, dtype=torch.long)
    toks[:, 0] = BOS
    i = torch.arange(K)
    toks[:, 1 + 4 * i] = demo_cls
    toks[:, 2 + 4 * i] = COLON
    toks[:, 3 + 4 * i] = demo_lab
    toks[:, 1 + 4 * K] = q_cls
    toks[:, 2 + 4 * K] = COLON
    return toks


def training_batch(batch: int, g: torch.Generator, p_bursty: float = P_BURSTY
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``tokens`` [batch, 35] and the label ``targets`` [batch, K+1] at every ':' (COLON_POS)."""
    q = torch.randint(0, N_TRAIN, (batch,), generator=g)
    other = (q + 1 + torch.randint(0, N_TRAIN - 1, (batch,), generator=g)) % N_TRAIN
    pick = torch.rand(batch, K, generator=g) < 0.5
    bursty_cls = torch.where(pick, q[:, None], other[:, None])
    bursty_cls[torch.arange(batch), torch.randint(0, K, (batch,), generator=g)] = q
    iw_cls = (q[:, None] + 1 + torch.randint(0, N_TRAIN - 1, (batch, K), generator=g)) % N_TRAIN
    bursty = torch.rand(batch, generator=g) < p_bursty
    cls = torch.where(bursty[:, None], bursty_cls, iw_cls)
    toks = _layout(CLASS0 + cls, fixed_label(cls), CLASS0 + q)
    targets = torch.cat([fixed_label(cls), fixed_label(q)[:, None]], 1)
    return toks, targets


def loss_fn(model: HookedModel, toks: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = model(toks)[:, COLON_POS]
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


def probe_loss(model: HookedModel) -> float:
    """Label loss at every ':' on 64 fixed training-distribution sequences (seed 4040)."""
    with torch.no_grad():
        return float(loss_fn(model, *_probe_batch()))


@functools.lru_cache(maxsize=1)
def _probe_batch() -> tuple[torch.Tensor, torch.Tensor]:
    return training_batch(BATCH, torch.Generator().manual_seed(PROBE_SEED))


# ------------------------------------------------------------------------------- evaluations
def icl_heldout_batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """2-way prompts over held-out classes with random labels: tokens, candidates [n, 2], target."""
    g = torch.Generator().manual_seed(seed)
    pair = torch.stack([torch.randperm(N_HELDOUT, generator=g)[:2] for _ in range(n)])
    labels = torch.stack([torch.randperm(N_LABELS, generator=g)[:2] for _ in range(n)]) + LABEL0
    which = torch.randint(0, 2, (n, K), generator=g)
    which[:, 0], which[:, 1] = 0, 1  # both classes shown ...
    which = which.gather(1, torch.stack([torch.randperm(K, generator=g) for _ in range(n)]))  # ... anywhere
    qw = torch.randint(0, 2, (n,), generator=g)
    cls = CLASS0 + N_TRAIN + pair.gather(1, which)
    toks = _layout(cls, labels.gather(1, which), CLASS0 + N_TRAIN + pair.gather(1, qw[:, None])[:, 0])
    return toks, labels, labels.gather(1, qw[:, None])[:, 0]


def iwl_batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training classes queried without their class in context: tokens, candidates [n, 8], target."""
    toks, targets = training_batch(n, torch.Generator().manual_seed(seed), p_bursty=0.0)
    cands = torch.arange(LABEL0, LABEL0 + N_LABELS).expand(n, -1)
    return toks, cands, targets[:, -1]


def correct(model: HookedModel, toks: torch.Tensor, cands: torch.Tensor,
            target: torch.Tensor) -> torch.Tensor:
    """0/1 per prompt: the argmax over the candidates at the query's ':' is the target."""
    with torch.no_grad():
        logits = model(toks)[:, COLON_POS[-1]]
    pred = cands.gather(1, logits.gather(1, cands).argmax(-1, keepdim=True))[:, 0]
    return (pred == target).float()


def evaluate(model: HookedModel, n: int = N_EVAL, seed: int = EVAL_SEED) -> dict:

    out: dict[str, Any] = {}
    for name, batch in (("icl_heldout_accuracy", icl_heldout_batch(n, seed)),
                        ("iwl_accuracy", iwl_batch(n, seed + 1))):
        e = stats.estimate(correct(model, *batch).numpy(), binary=True)
        out[name] = {"value": round(e.value, 4), "ci": [round(e.ci_low, 4), round(e.ci_high, 4)], "n": e.n}
    out["eval_seed"] = seed
    return out


def dynamics_rows(model: HookedModel, step: int, n: int = N_EVAL, seed: int = EVAL_SEED) -> list[dict]:
    """Dynamics-table rows (``experiments.studies.dynamics``) of the two accuracies at one checkpoint."""
    rows = []
    for metric, res in evaluate(model, n, seed).items():
        if isinstance(res, dict):
            rows.append({"step": step, "metric": metric, "n": res["n"], "value": res["value"],
                         "ci_low": res["ci"][0], "ci_high": res["ci"][1]})
    return rows


def train(seed: int = 0, steps: int | None = None, progress: bool = True,
          recorder: Recorder | None = None) -> TrainResult:

    steps = steps or DEFAULT_STEPS
    torch.manual_seed(seed)
    config = {**CONFIG, "seed": seed}
    model = build_model("bridge-native", config)
    g = torch.Generator().manual_seed(seed)

    def loss_at(step: int) -> torch.Tensor:
        return loss_fn(model, *training_batch(BATCH, g))

    stats_ = fit(model, loss_at, steps, LR, WARMUP, "icl-transience", progress, recorder=recorder)
    metrics = evaluate(model)
    metrics["final_train_loss_ema"] = round(stats_.loss_ema, 4)
    return TrainResult(
        model=model, arch="bridge-native", config=config,
        task={"name": "classify-transience", "module": "experiments.models.zoo.transience", "k": K,
              "n_train_classes": N_TRAIN, "n_heldout_classes": N_HELDOUT, "n_labels": N_LABELS,
              "p_bursty": P_BURSTY, "batch": BATCH, "optimizer": "AdamW(wd=0.01), grad clip 1.0",
              "lr": LR, "schedule": f"linear warmup {WARMUP}, cosine to 0.1 lr"},
        steps=steps, metrics=metrics,
        notes=("Accuracy on held-out classes with random labels (ICL only; chance 0.5) and on "
               "training classes absent from the context (in-weights only; chance 0.125), "
               f"{N_EVAL} prompts each, Wilson 95% intervals. The curve over training is in the "
               "checkpoint series: `iclwb dynamics icl-transience`."),
        extra={"train_cpu_seconds": round(stats_.cpu_seconds, 1), "torch_threads": torch.get_num_threads()},
    )


SPECS = {
    "icl-transience": ZooSpec(
        name="icl-transience",
        description="2-layer transformer (d_model 64, MLPs) trained on a mix of bursty and "
                    "in-weights classification sequences (64 classes with fixed labels): does "
                    "in-context learning on held-out classes rise and then fade (Singh et al. 2023)?",
        train=train,
    )
}

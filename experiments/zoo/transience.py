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
training (``dynamics_rows``, used by ``experiments.dynamics``):

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
import math
import random
import time
from pathlib import Path

import torch

from experiments.zoo import TrainResult, ZooSpec, read_card, save_checkpoint
from experiments.zoo.series import Recorder
from experiments.zoo.training import fit

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


def training_batch(batch: int, g: torch.Generator, p_bursty: float = P_BURSTY,
                   n_train: int = N_TRAIN, zipf: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``tokens`` [batch, 35] and the label ``targets`` [batch, K+1] at every ':' (COLON_POS).

    Classes are drawn uniformly from ``n_train`` (the shipped model: 64), or with ``zipf`` > 0 from
    a Zipf law p(c) ~ (c+1)^-zipf (a variant; Chan et al. 2022 found a skewed class distribution
    favours ICL): the query class, the bursty sequences' other class and the in-weights
    sequences' demonstrations (a draw equal to the query's class moves to the next class)."""
    q = _classes((batch,), g, n_train, zipf)
    other = _other(q, (batch,), g, n_train, zipf)
    pick = torch.rand(batch, K, generator=g) < 0.5
    bursty_cls = torch.where(pick, q[:, None], other[:, None])
    bursty_cls[torch.arange(batch), torch.randint(0, K, (batch,), generator=g)] = q
    iw_cls = _other(q[:, None], (batch, K), g, n_train, zipf)
    bursty = torch.rand(batch, generator=g) < p_bursty
    cls = torch.where(bursty[:, None], bursty_cls, iw_cls)
    toks = _layout(CLASS0 + cls, fixed_label(cls), CLASS0 + q)
    targets = torch.cat([fixed_label(cls), fixed_label(q)[:, None]], 1)
    return toks, targets


def _classes(shape: tuple[int, ...], g: torch.Generator, n_train: int, zipf: float) -> torch.Tensor:
    if zipf <= 0:
        return torch.randint(0, n_train, shape, generator=g)
    w = torch.arange(1, n_train + 1, dtype=torch.float64) ** -zipf
    return torch.multinomial(w, math.prod(shape), replacement=True, generator=g).reshape(shape)


def _other(q: torch.Tensor, shape: tuple[int, ...], g: torch.Generator, n_train: int,
           zipf: float) -> torch.Tensor:
    """Classes other than ``q`` (broadcast to ``shape``): uniform, or Zipf with collisions moved on."""
    if zipf <= 0:
        return (q + 1 + torch.randint(0, n_train - 1, shape, generator=g)) % n_train
    c = _classes(shape, g, n_train, zipf)
    return torch.where(c == q, (c + 1) % n_train, c)


def loss_fn(model: torch.nn.Module, toks: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = model(toks)[:, COLON_POS]
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


def probe_loss(model: torch.nn.Module, n_train: int | None = None, zipf: float | None = None) -> float:
    """Label loss at every ':' on 64 fixed training-distribution sequences (seed 4040)."""
    task = _card_task(model)
    n_train = n_train or task.get("n_train_classes", N_TRAIN)
    zipf = zipf if zipf is not None else task.get("zipf", 0.0)
    with torch.no_grad():
        return float(loss_fn(model, *_probe_batch(n_train, zipf)))


@functools.lru_cache(maxsize=4)
def _probe_batch(n_train: int = N_TRAIN, zipf: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    return training_batch(BATCH, torch.Generator().manual_seed(PROBE_SEED), n_train=n_train, zipf=zipf)


# ------------------------------------------------------------------------------- evaluations
def icl_heldout_batch(n: int, seed: int, n_train: int = N_TRAIN) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """2-way prompts over held-out classes with random labels: tokens, candidates [n, 2], target."""
    g = torch.Generator().manual_seed(seed)
    pair = torch.stack([torch.randperm(N_HELDOUT, generator=g)[:2] for _ in range(n)])
    labels = torch.stack([torch.randperm(N_LABELS, generator=g)[:2] for _ in range(n)]) + LABEL0
    which = torch.randint(0, 2, (n, K), generator=g)
    which[:, 0], which[:, 1] = 0, 1  # both classes shown ...
    which = which.gather(1, torch.stack([torch.randperm(K, generator=g) for _ in range(n)]))  # ... anywhere
    qw = torch.randint(0, 2, (n,), generator=g)
    cls = CLASS0 + n_train + pair.gather(1, which)
    toks = _layout(cls, labels.gather(1, which), CLASS0 + n_train + pair.gather(1, qw[:, None])[:, 0])
    return toks, labels, labels.gather(1, qw[:, None])[:, 0]


def iwl_batch(n: int, seed: int, n_train: int = N_TRAIN) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training classes (uniform) queried without their class in context: tokens, candidates
    [n, 8], target."""
    toks, targets = training_batch(n, torch.Generator().manual_seed(seed), p_bursty=0.0, n_train=n_train)
    cands = torch.arange(LABEL0, LABEL0 + N_LABELS).expand(n, -1)
    return toks, cands, targets[:, -1]


def correct(model: torch.nn.Module, toks: torch.Tensor, cands: torch.Tensor,
            target: torch.Tensor) -> torch.Tensor:
    """0/1 per prompt: the argmax over the candidates at the query's ':' is the target."""
    with torch.no_grad():
        logits = model(toks)[:, COLON_POS[-1]]
    pred = cands.gather(1, logits.gather(1, cands).argmax(-1, keepdim=True))[:, 0]
    return (pred == target).float()


def evaluate(model: torch.nn.Module, n: int = N_EVAL, seed: int = EVAL_SEED,
             n_train: int | None = None) -> dict:
    """ICL accuracy on held-out classes and in-weights accuracy (Wilson 95%); ``n_train`` defaults
    to the model card's number of training classes (a variant), else ``N_TRAIN``."""
    from probes import stats

    n_train = n_train or _card_task(model).get("n_train_classes", N_TRAIN)
    out = {}
    for name, batch in (("icl_heldout_accuracy", icl_heldout_batch(n, seed, n_train)),
                        ("iwl_accuracy", iwl_batch(n, seed + 1, n_train))):
        e = stats.estimate(correct(model, *batch).numpy(), binary=True)
        out[name] = {"value": round(e.value, 4), "ci": [round(e.ci_low, 4), round(e.ci_high, 4)], "n": e.n}
    out["eval_seed"] = seed
    return out


def _card_task(model: torch.nn.Module) -> dict:
    return dict((getattr(model, "zoo_card", None) or {}).get("task") or {})


def dynamics_rows(model: torch.nn.Module, step: int, n: int = N_EVAL, seed: int = EVAL_SEED) -> list[dict]:
    """Dynamics-table rows (``experiments.dynamics``) of the two accuracies at one checkpoint."""
    rows = []
    for metric, res in evaluate(model, n, seed).items():
        if isinstance(res, dict):
            rows.append({"step": step, "metric": metric, "n": res["n"], "value": res["value"],
                         "ci_low": res["ci"][0], "ci_high": res["ci"][1]})
    return rows


def train(seed: int = 0, steps: int | None = None, progress: bool = True,
          recorder: Recorder | None = None, n_train: int = N_TRAIN, zipf: float = 0.0) -> TrainResult:
    """Train the shipped recipe, or with ``n_train`` classes / a ``zipf`` class law a variant (its
    recorder's probe must be ``functools.partial(probe_loss, n_train=..., zipf=...)``)."""
    from experiments.zoo import build_model

    steps = steps or DEFAULT_STEPS
    torch.manual_seed(seed)
    config = {**CONFIG, "d_vocab": CLASS0 + n_train + N_HELDOUT, "seed": seed}
    model = build_model("bridge-native", config)
    g = torch.Generator().manual_seed(seed)

    def loss_at(step: int) -> torch.Tensor:
        return loss_fn(model, *training_batch(BATCH, g, n_train=n_train, zipf=zipf))

    stats_ = fit(model, loss_at, steps, LR, WARMUP, "icl-transience", progress, recorder=recorder)
    metrics = evaluate(model, n_train=n_train)
    metrics["final_train_loss_ema"] = round(stats_.loss_ema, 4)
    return TrainResult(
        model=model, arch="bridge-native", config=config,
        task={"name": "classify-transience", "module": "experiments.zoo.transience", "k": K,
              "n_train_classes": n_train, **({"zipf": zipf} if zipf > 0 else {}),
              "n_heldout_classes": N_HELDOUT, "n_labels": N_LABELS,
              "p_bursty": P_BURSTY, "batch": BATCH, "optimizer": "AdamW(wd=0.01), grad clip 1.0",
              "lr": LR, "schedule": f"linear warmup {WARMUP}, cosine to 0.1 lr"},
        steps=steps, metrics=metrics,
        notes=("Accuracy on held-out classes with random labels (ICL only; chance 0.5) and on "
               "training classes absent from the context (in-weights only; chance 0.125), "
               f"{N_EVAL} prompts each, Wilson 95% intervals. The curve over training is in the "
               "checkpoint series: `iclwb dynamics icl-transience`."),
        extra={"train_cpu_seconds": round(stats_.cpu_seconds, 1), "torch_threads": torch.get_num_threads()},
    )


def train_variant(root: Path, n_train: int, zipf: float = 0.0, steps: int = DEFAULT_STEPS,
                  checkpoints: int = 12, seed: int = 0) -> dict:
    """Train a variant (``n_train`` classes, ``zipf`` class law) with a checkpoint series into
    ``root/icl-transience`` (not the shipped model) and return its card; read its curve with
    ``experiments.dynamics.dynamics_table("icl-transience", root=root)``."""
    out = Path(root) / "icl-transience"
    probe = functools.partial(probe_loss, n_train=n_train, zipf=zipf)
    recorder = Recorder("icl-transience", seed, checkpoints, out, probe, probe="probe_loss (variant)")
    t0 = time.perf_counter()
    result = train(seed=seed, steps=steps, progress=False, recorder=recorder, n_train=n_train, zipf=zipf)
    elapsed = time.perf_counter() - t0
    recorder.finish()
    result.extra = {**result.extra, "checkpoint_series": {"n": len(recorder.steps), "steps": recorder.steps,
                                                          "index": "series/index.json"}}
    save_checkpoint("icl-transience", result, seed, elapsed, Path(root))
    return read_card("icl-transience", Path(root))


SPECS = {
    "icl-transience": ZooSpec(
        name="icl-transience",
        description="2-layer transformer (d_model 64, MLPs) trained on a mix of bursty and "
                    "in-weights classification sequences (64 classes with fixed labels): does "
                    "in-context learning on held-out classes rise and then fade (Singh et al. 2023)?",
        train=train,
    )
}

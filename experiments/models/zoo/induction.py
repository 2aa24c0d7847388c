"""``induction-2l``: a 2-layer attention-only transformer trained on repeated random segments.

Training data: each sequence of 64 tokens is a random segment of length L ~ U{4..32} drawn from
the 256-token vocabulary, repeated until the sequence is full. Next-token loss everywhere. The
first copy of a segment is unpredictable; every later token is predictable only by induction
(find the earlier occurrence of the current token, copy its successor), which a 2-layer model
implements with a previous-token head in layer 0 and an induction head in layer 1.
"""

from __future__ import annotations

import functools

import torch
from tqdm.auto import tqdm

from experiments.models.zoo import TrainResult, ZooSpec, build_model
from experiments.models.zoo.series import Recorder
from probes.heads import induction_scores, previous_token_scores, repeated_random_tokens
from probes.hooked import HookedModel

CONFIG = dict(
    d_model=64, n_layers=2, n_heads=4, d_head=16, n_ctx=64, d_vocab=256, attn_only=True,
    act_fn="gelu", normalization_type="LN", positional_embedding_type="standard",
)
SEQ_LEN = 64
BATCH = 64
LR = 3e-3
DEFAULT_STEPS = 1500


def sample_batch(batch: int, g: torch.Generator, seq_len: int = SEQ_LEN, vocab: int = 256) -> torch.Tensor:
    rows = []
    for _ in range(batch):
        seg = int(torch.randint(4, 33, (1,), generator=g))
        r = torch.randint(0, vocab, (seg,), generator=g)
        rows.append(r.repeat(seq_len // seg + 1)[:seq_len])
    return torch.stack(rows)


PROBE_SEED = 4040


def probe_loss(model: HookedModel) -> float:
    """Next-token loss on 64 fixed training-distribution sequences (seed 4040)."""
    with torch.no_grad():
        return float(model(_probe_batch(), return_type="loss"))


@functools.lru_cache(maxsize=1)
def _probe_batch() -> torch.Tensor:
    return sample_batch(BATCH, torch.Generator().manual_seed(PROBE_SEED))


def train(seed: int = 0, steps: int | None = None, progress: bool = True,
          recorder: Recorder | None = None) -> TrainResult:

    steps = steps or DEFAULT_STEPS
    torch.manual_seed(seed)
    config = {**CONFIG, "seed": seed}
    model = build_model("bridge-native", config)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    g = torch.Generator().manual_seed(seed)
    loss_val = float("nan")
    if recorder is not None:
        recorder.begin(steps)
    for step in tqdm(range(steps), disable=not progress, desc="induction-2l"):
        toks = sample_batch(BATCH, g)
        loss = model(toks, return_type="loss")
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_val = float(loss.detach())
        if recorder is not None:
            recorder.after_step(step + 1, model, loss_val)
    model.eval()
    metrics = evaluate(model)
    metrics["final_train_loss"] = round(loss_val, 4)
    return TrainResult(
        model=model,
        arch="bridge-native",
        config=config,
        task={"name": "repeated-random-segments", "seq_len": SEQ_LEN, "segment_len": [4, 32],
              "vocab": 256, "batch": BATCH, "optimizer": "Adam", "lr": LR},
        steps=steps,
        metrics=metrics,
        notes=("Mechanism: a previous-token head in layer 0 and induction heads in layer 1 "
               "(see metrics.prev_token_top and metrics.induction_top)."),
    )


def evaluate(model: HookedModel, seed: int = 1234) -> dict:
    with torch.no_grad():
        ind = induction_scores(model, seg_len=20, batch=16, seed=seed)
        prev = previous_token_scores(model, repeated_random_tokens(16, 20, 256, seed=seed + 1))
        toks = repeated_random_tokens(32, 32, 256, seed=seed + 2)
        per_tok = model(toks, return_type="loss", loss_per_token=True)  # [B, T-1]
    L = toks.shape[1] // 2
    l0, h0, s0 = prev.top(1)[0]
    l1, h1, s1 = ind.top(1)[0]
    return {
        "loss_first_half": round(float(per_tok[:, : L - 1].mean()), 4),
        "loss_repeated_half": round(float(per_tok[:, L:].mean()), 4),
        "prev_token_top": {"layer": l0, "head": h0, "score": round(s0, 4)},
        "induction_top": {"layer": l1, "head": h1, "score": round(s1, 4)},
        "prev_token_scores": [[round(float(x), 4) for x in row] for row in prev.scores],
        "induction_scores": [[round(float(x), 4) for x in row] for row in ind.scores],
    }


SPECS = {
    "induction-2l": ZooSpec(
        name="induction-2l",
        description="2-layer attention-only transformer (d_model 64, 4 heads) trained on repeated "
                    "random segments: a previous-token head in L0, induction heads in L1.",
        train=train,
    )
}

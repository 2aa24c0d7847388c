"""A hand-built model whose ICL circuit is known exactly: for tests, notebooks and demos.

``label_copy_model()`` is a 1-layer, 2-head, attention-only TransformerBridge with no layer norm
and one-hot token embeddings. Vocabulary: 0 pad, 1 BOS, 2 ':' (every forerunner), 3 'A', 4 'B'
(the labels), 5 separator, 6..11 text words.

- Head 0 reads from the forerunner ':' and attends (score 50/sqrt(d_head)) only to label tokens;
  it copies the label's identity into the residual stream, so the read-out logits of A and B are
  the share of attention on A-labels and on B-labels: the model predicts the majority label.
  s_q <- y_i is the *only* path that carries the label.
- Head 1 has zero value and output weights: its output is exactly zero.

``label_copy_batch(n, k, seed)`` builds prompts ``BOS (x_i : y_i SEP)* x_q :`` whose majority
demonstration label is the target (balanced targets, so chance is exactly 0.5).
"""

from __future__ import annotations

import torch
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge.sources.native import boot as boot_native

from probes.hooked import HookedModel
from probes.prompt import PromptBatch, PromptBuilder

PAD, BOS, COLON, LABEL_A, LABEL_B, SEP = 0, 1, 2, 3, 4, 5
WORDS = tuple(range(6, 12))


def label_copy_model(n_ctx: int = 64) -> HookedModel:
    """The hand-set 1-layer model described in the module docstring (eval mode)."""

    d, V, H, dh = 16, 12, 2, 8
    model: HookedModel = boot_native(TransformerBridgeConfig(
        d_model=d, n_layers=1, n_heads=H, d_head=dh, n_ctx=n_ctx, d_vocab=V, attn_only=True,
        act_fn="gelu", normalization_type=None, seed=0,
    ))
    net = model.original_model
    attn = net.layers[0].attn
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.tok_embed.weight[:, :V] = torch.eye(V)
        attn.q.weight[0, COLON] = 50.0  # head 0 query: "I am a forerunner"
        attn.k.weight[0, LABEL_A] = 1.0  # head 0 key: "I am a label"
        attn.k.weight[0, LABEL_B] = 1.0
        attn.v.weight[0, LABEL_A] = 1.0  # head 0 value: which label
        attn.v.weight[1, LABEL_B] = 1.0
        attn.o.weight[LABEL_A, 0] = 1.0
        attn.o.weight[LABEL_B, 1] = 1.0
        net.head.weight[LABEL_A, LABEL_A] = 1.0  # unembed reads the copied label
        net.head.weight[LABEL_B, LABEL_B] = 1.0
    model.eval()
    return model


def label_copy_batch(n: int = 16, k: int = 3, seed: int = 0) -> PromptBatch:
    """Prompts whose majority demonstration label is the target; text lengths vary (1-3 words)."""
    if k < 1 or k % 2 == 0:
        raise ValueError("use an odd k >= 1 so that the majority label is defined")
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(n):
        target = (LABEL_A, LABEL_B)[b % 2]
        other = LABEL_B if target == LABEL_A else LABEL_A
        labels = [target] * (k // 2 + 1) + [other] * (k // 2)
        labels = [labels[i] for i in torch.randperm(k, generator=g).tolist()]
        pb = PromptBuilder().add([BOS])
        for y in labels:
            words = torch.randint(WORDS[0], WORDS[-1] + 1, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g)
            pb.demo(words.tolist(), COLON, y, cls=y - LABEL_A)
            pb.add([SEP])
        words = torch.randint(WORDS[0], WORDS[-1] + 1, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g)
        pb.query(words.tolist(), COLON)
        rows.append(pb.build(target=target, candidates=[LABEL_A, LABEL_B], query_class=target - LABEL_A,
                             pad_id=PAD, meta={"task": "label-copy", "model": "label-copy-toy"}))
    return PromptBatch.concat(rows)

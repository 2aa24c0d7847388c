"""``kv-recall``: key-value recall, a task any token model can be prompted with.

k demonstrations ``a_i b_i v_i`` then a query ``a_j b_j`` whose answer is ``v_j``, the value of a
repeated demonstration: solvable by an induction head. Roles: x_i = a_i (demonstration text),
s_i = b_i (forerunner), y_i = v_i (label); the candidates are the demonstration values and
``query_class`` is j. Keys, forerunners and values are 3k distinct random tokens below ``vocab``
(default ``VOCAB_SIZE``; pass the model's ``d_vocab`` to use its whole vocabulary).
"""

from __future__ import annotations

import torch

from experiments.tasks.base import TaskError
from probes.prompt import PromptBatch, PromptBuilder

VOCAB_SIZE = 21
"""The smallest zoo vocabulary (icll-dfa): every token model of the zoo accepts the default."""


class KVRecallError(TaskError):
    """k or vocab that cannot make a kv-recall prompt."""


def prompt(vocab: int, k: int, seed: int = 0) -> PromptBatch:
    """One kv-recall prompt (deterministic in ``seed``)."""
    if k < 1:
        raise KVRecallError("kv-recall needs k >= 1 (the query repeats a demonstration's key)")
    if 3 * k > vocab:
        raise KVRecallError(f"kv-recall with k={k} needs {3 * k} distinct tokens; the vocabulary "
                            f"has {vocab}: use a smaller k")
    g = torch.Generator().manual_seed(seed)
    toks = torch.randperm(vocab, generator=g)[: 3 * k].view(k, 3).tolist()
    j = int(torch.randint(k, (1,), generator=g))
    pb = PromptBuilder()
    for i, (a, b, v) in enumerate(toks):
        pb.demo([a], b, v, cls=i)
    pb.query([toks[j][0]], toks[j][1])
    return pb.build(target=toks[j][2], candidates=[t[2] for t in toks], query_class=j,
                    meta={"task": "kv-recall", "k": k, "seed": seed})


def make_prompts(k: int, n_prompts: int, seed: int = 0, vocab: int = VOCAB_SIZE) -> PromptBatch:
    """``n_prompts`` kv-recall prompts; row i is ``prompt(vocab, k, seed * 100_003 + i)``."""
    batch = PromptBatch.concat([prompt(vocab, k, seed * 100_003 + i) for i in range(n_prompts)])
    batch.meta.update(task="kv-recall", k=k, seed=seed, vocab=vocab)
    return batch

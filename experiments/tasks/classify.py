"""Task 3: few-shot classification with an arbitrary label mapping per prompt.

After Chan et al. 2022 (bursty few-shot sequences) and Reddy 2023 (items from clustered classes,
labels from a small set): the right answer is only recoverable from the context.

Items. ``N_CLASSES`` = 16 classes; class c owns ``TOKENS_PER_CLASS`` item tokens (default 1). An
item x is ``x_len`` (default 3) tokens, each drawn from its class's tokens, or, with probability
``noise`` (default 0.1), replaced by a uniformly random item token of any class: a class is a
cluster of token patterns around its prototype, with within-class noise. With more tokens per
class two items of one class may share no token and a model must learn which tokens go together;
that makes the task much slower to learn (at 2 or 4 tokens per class a 2-layer model stayed on
the label-copying plateau for 1500+ steps), so the zoo model uses 1.

Labels. ``N_LABELS`` = 8 label tokens form the pool. Each prompt draws ``n_way`` (2-4) classes and
``n_way`` distinct labels from the pool and assigns them at random: the class -> label mapping is
new in every prompt, so without demonstrations the answer is at chance (1 / n_way).

Layout (vocabulary in ``token_names()``)::

    [BOS] x_1 ':' y_1 '|' x_2 ':' y_2 '|' ... x_k ':' y_k '|' x_q ':'

Roles: ``demo_text[i]`` = x_i (x_len tokens), ``forerunner[i]`` = its ':', ``label[i]`` = y_i,
``query_text`` = x_q, ``readout`` = the final ':'; ``target`` = the query's label,
``candidates`` = the n_way labels in use (chance = 1/n_way), ``demo_class``/``query_class`` =
class ids (0..15). '|' and BOS are untagged. Prompt length = 5 + 6k tokens (x_len 3).

Demonstration classes are drawn uniformly from the prompt's classes; with ``cover=True`` (default)
and k >= n_way every class appears at least once. The query's class is uniform over the prompt's
classes (so for k < n_way it may be absent from the demonstrations).

Variants (same ``seed`` -> the same items, classes and query; only the labels or demos differ):

- ``"standard"``;
- ``"flipped"``: every label in use is replaced by another one in use (a derangement), in the
  demonstrations and in the target; ``meta["unflipped_target"]`` keeps the standard answer. A
  model that reads the mapping from the context is as accurate as on ``standard``;
- ``"no_demos"``: the demonstrations are dropped (k = 0), query and candidates kept.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from experiments.tasks.base import TaskError, check_n_prompts
from probes.prompt import PromptBatch, PromptBuilder

PAD, BOS, COLON, SEP = 0, 1, 2, 3
N_LABELS = 8
LABEL0 = 4
N_CLASSES = 16
TOKENS_PER_CLASS = 1
ITEM0 = LABEL0 + N_LABELS
VOCAB_SIZE = ITEM0 + N_CLASSES * TOKENS_PER_CLASS  # 28
LABEL_TOKENS: tuple[int, ...] = tuple(range(LABEL0, LABEL0 + N_LABELS))
X_LEN = 3
NOISE = 0.1
VARIANTS = ("standard", "flipped", "no_demos")


def token_names() -> list[str]:
    names = ["<pad>", "<bos>", ":", "|"] + [f"L{i}" for i in range(N_LABELS)]
    names += [f"c{c}.{j}" for c in range(N_CLASSES) for j in range(TOKENS_PER_CLASS)]
    return names


def class_tokens(c: int) -> list[int]:
    """The item tokens owned by class ``c``."""
    return list(range(ITEM0 + c * TOKENS_PER_CLASS, ITEM0 + (c + 1) * TOKENS_PER_CLASS))


def token_class(tok: int) -> int:
    """Class owning item token ``tok`` (-1 for non-item tokens)."""
    return (tok - ITEM0) // TOKENS_PER_CLASS if ITEM0 <= tok < VOCAB_SIZE else -1


def sample_item(c: int, rng: random.Random, x_len: int = X_LEN, noise: float = NOISE) -> list[int]:
    own = class_tokens(c)
    return [rng.randrange(ITEM0, VOCAB_SIZE) if rng.random() < noise else rng.choice(own)
            for _ in range(x_len)]


@dataclass
class Episode:
    """One prompt's content before layout: classes, labels, items."""

    classes: list[int]          # the n_way classes in use
    labels: list[int]           # label token of each class in use (same order)
    demo_classes: list[int]
    demo_items: list[list[int]]
    query_class: int
    query_item: list[int]

    def label_of(self, c: int) -> int:
        return self.labels[self.classes.index(c)]


def draw_episode(rng: random.Random, k: int, n_way: int, x_len: int = X_LEN,
                 noise: float = NOISE, cover: bool = True) -> Episode:
    classes = rng.sample(range(N_CLASSES), n_way)
    labels = rng.sample(LABEL_TOKENS, n_way)
    if cover and k >= n_way:
        demo_classes = classes + [rng.choice(classes) for _ in range(k - n_way)]
        rng.shuffle(demo_classes)
    else:
        demo_classes = [rng.choice(classes) for _ in range(k)]
    demo_items = [sample_item(c, rng, x_len, noise) for c in demo_classes]
    q = rng.choice(classes)
    return Episode(classes, list(labels), demo_classes, demo_items, q, sample_item(q, rng, x_len, noise))


def _derangement(n: int, rng: random.Random) -> list[int]:
    while True:
        p = list(range(n))
        rng.shuffle(p)
        if all(i != p[i] for i in range(n)):
            return p


def _n_way_of(n_way: int | tuple[int, int], rng: random.Random) -> int:
    lo, hi = (n_way, n_way) if isinstance(n_way, int) else n_way
    if not 2 <= lo <= hi <= min(N_LABELS, N_CLASSES):
        raise TaskError(f"n_way must lie in 2..{N_LABELS}, got {n_way}")
    return rng.randint(lo, hi)


def make_prompts(
    k: int,
    n_prompts: int,
    seed: int,
    n_way: int | tuple[int, int] = 2,
    variant: str = "standard",
    x_len: int = X_LEN,
    noise: float = NOISE,
    cover: bool = True,
) -> PromptBatch:
    """``n_prompts`` classification prompts with ``k`` demonstrations (see the module doc).

    ``n_way``: classes (= labels) per prompt, or a (lo, hi) range drawn per prompt.
    """
    if variant not in VARIANTS:
        raise TaskError(f"unknown classify variant {variant!r}; use one of {VARIANTS}")
    if k < 0:
        raise TaskError(f"k must be >= 0, got {k}")
    if x_len < 1:
        raise TaskError(f"x_len must be >= 1, got {x_len}")
    check_n_prompts(n_prompts, (k + 1) * (x_len + 2) + 1, "classify")
    rng = random.Random(seed)
    rows, unflipped = [], []
    for _ in range(n_prompts):
        ep = draw_episode(rng, k, _n_way_of(n_way, rng), x_len, noise, cover)
        flip_rng = random.Random(rng.random())  # drawn for every variant, so variants pair up
        perm = _derangement(len(ep.classes), flip_rng)
        mapping = {c: ep.label_of(c) for c in ep.classes}
        unflipped.append(mapping[ep.query_class])
        if variant == "flipped":
            mapping = {c: ep.labels[perm[i]] for i, c in enumerate(ep.classes)}
        pb = PromptBuilder().add([BOS])
        if variant != "no_demos":
            for c, x in zip(ep.demo_classes, ep.demo_items):
                pb.demo(x, COLON, mapping[c], cls=c)
                pb.add([SEP])
        pb.query(ep.query_item, COLON)
        rows.append(pb.build(target=mapping[ep.query_class], candidates=list(ep.labels),
                             query_class=ep.query_class, pad_id=PAD))
    batch = PromptBatch.concat(rows)
    batch.meta = {"task": "classify", "k": 0 if variant == "no_demos" else k, "variant": variant,
                  "n_way": n_way, "x_len": x_len, "noise": noise, "seed": seed,
                  "unflipped_target": torch.tensor(unflipped)}
    return batch


# -------------------------------------------------------------------------- training batches
def training_batch(batch: int, k: int, rng: random.Random, n_way: tuple[int, int] = (2, 4),
                   x_len: int = X_LEN, noise: float = NOISE
                   ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch n"], Int[Tensor, "batch n"]]:
    """Fixed-layout sequences of k demonstrations + a query, for training (no PromptBatch).

    Returns ``tokens`` [batch, 5 + (x_len+3)k ...], the positions ``pos`` [batch, k+1] of every ':'
    (demonstration forerunners, then the read-out) and their next-token ``targets`` (the labels).
    Demonstration classes are uniform over the prompt's classes (no coverage guarantee), so the
    label at ':' number i is predicted from i earlier demonstrations: one sequence trains every
    k' = 0..k.
    """
    rows, tgts = [], []
    for _ in range(batch):
        ep = draw_episode(rng, k, _n_way_of(n_way, rng), x_len, noise, cover=False)
        toks = [BOS]
        for c, x in zip(ep.demo_classes, ep.demo_items):
            toks += x + [COLON, ep.label_of(c), SEP]
        toks += ep.query_item + [COLON]
        rows.append(toks)
        tgts.append([ep.label_of(c) for c in ep.demo_classes] + [ep.label_of(ep.query_class)])
    step = x_len + 3
    pos = torch.tensor([1 + x_len + step * i for i in range(k + 1)]).expand(batch, -1)
    return torch.tensor(rows), pos, torch.tensor(tgts)

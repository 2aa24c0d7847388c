"""Role-tagged prompts: token ids plus the positions of every ICL role.

A prompt is a sequence of demonstrations ``x_i s_i y_i`` followed by a query ``x_q s_q``:

- ``demo_text[i]``: the span of demonstration i's input x_i (start, end exclusive)
- ``forerunner[i]``: the token just before label i (s_i, e.g. the ':' of "Label:")
- ``label[i]``: the label token y_i
- ``query_text``: the span of the query input x_q
- ``readout``: the final position s_q, where the prediction is read

Batches are **right-padded**: row b holds its real tokens at positions ``0 .. length[b]-1`` and
``pad_id`` after them. In a causal model a real position never attends to a later one, so every
real position computes exactly what it would in an unpadded run, with no attention mask and no
position-id shift (left padding needs both). Read predictions at ``readout``, not at ``-1``.

Positions are always carried as index tensors; no analysis searches token strings for roles.
Missing entries (a row with fewer demonstrations than the widest row) are ``-1`` and
``demo_mask`` is False there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from probes.prompt_checks import PromptError, check_layout

Role = Literal["demo_text", "forerunner", "label", "query_text", "readout", "pad"]
ROLES: tuple[str, ...] = ("demo_text", "forerunner", "label", "query_text", "readout", "pad")


@dataclass
class PromptBatch:
    """A batch of role-tagged prompts. See the module docstring for the layout."""

    tokens: Int[Tensor, "batch pos"]
    lengths: Int[Tensor, " batch"]
    demo_text: Int[Tensor, "batch k 2"]
    forerunner: Int[Tensor, "batch k"]
    label: Int[Tensor, "batch k"]
    query_text: Int[Tensor, "batch 2"]
    readout: Int[Tensor, " batch"]
    target: Int[Tensor, " batch"] | None = None
    """Correct next token at the read-out position (-1 where unknown)."""
    candidates: Int[Tensor, "batch n_cand"] | None = None
    """Tokens the prediction is scored over (the label set); accuracy is argmax among them."""
    demo_class: Int[Tensor, "batch k"] | None = None
    """Class index of each demonstration's input (for probes), -1 where missing."""
    query_class: Int[Tensor, " batch"] | None = None
    pad_id: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ shape helpers
    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def n_demos(self) -> int:
        return int(self.forerunner.shape[1])

    @property
    def demo_mask(self) -> Bool[Tensor, "batch k"]:
        return self.forerunner >= 0

    @property
    def attention_mask(self) -> Bool[Tensor, "batch pos"]:
        """True at real tokens, False at right padding."""
        return torch.arange(self.seq_len)[None, :] < self.lengths[:, None]

    @property
    def label_tokens(self) -> Int[Tensor, "batch k"]:
        """Token id of each demonstration label (-1 where missing)."""
        ids = self.tokens.gather(1, self.label.clamp(min=0))
        return torch.where(self.demo_mask, ids, torch.full_like(ids, -1))

    # ------------------------------------------------------------------ role views
    def role_mask(self, role: str, demo: int | None = None) -> Bool[Tensor, "batch pos"]:
        """Boolean [batch, pos] mask of the positions holding ``role``.

        ``role`` is one of ROLES, or "demo" (all tokens of every demonstration: x_i, s_i, y_i) or
        "query" (x_q and s_q). ``demo`` restricts demonstration roles to demonstration i.
        """
        B, T = self.tokens.shape
        pos = torch.arange(T)[None, :]
        mask = torch.zeros(B, T, dtype=torch.bool)
        demos = range(self.n_demos) if demo is None else [demo]
        if role == "demo_text":
            for i in demos:
                s, e = self.demo_text[:, i, 0:1], self.demo_text[:, i, 1:2]
                mask |= (pos >= s) & (pos < e) & (s >= 0)
        elif role in ("forerunner", "label"):
            idx = getattr(self, role)
            for i in demos:
                mask |= (pos == idx[:, i : i + 1]) & (idx[:, i : i + 1] >= 0)
        elif role == "demo":
            for sub in ("demo_text", "forerunner", "label"):
                mask |= self.role_mask(sub, demo)
        elif role == "query_text":
            s, e = self.query_text[:, 0:1], self.query_text[:, 1:2]
            mask = (pos >= s) & (pos < e)
        elif role == "readout":
            mask = pos == self.readout[:, None]
        elif role == "query":
            mask = self.role_mask("query_text") | self.role_mask("readout")
        elif role == "pad":
            mask = ~self.attention_mask
        else:
            raise PromptError(
                f"unknown role {role!r}; use one of {ROLES + ('demo', 'query')}"
            )
        return mask

    def positions(self, role: str) -> tuple[Int[Tensor, "batch n"], Bool[Tensor, "batch n"]]:
        """Positions of ``role`` as a padded [batch, n] index tensor and its validity mask.

        Padding indices are 0 (safe to gather with) and masked out by the second tensor.
        """
        if role in ("forerunner", "label"):
            idx = getattr(self, role)
            return idx.clamp(min=0), idx >= 0
        if role == "readout":
            return self.readout[:, None], torch.ones(self.batch_size, 1, dtype=torch.bool)
        mask = self.role_mask(role)
        n = int(mask.sum(1).max().item()) if mask.numel() else 0
        idx = torch.zeros(self.batch_size, n, dtype=torch.long)
        valid = torch.zeros(self.batch_size, n, dtype=torch.bool)
        for b in range(self.batch_size):
            where = mask[b].nonzero().flatten()
            idx[b, : len(where)] = where
            valid[b, : len(where)] = True
        return idx, valid

    def role_of_positions(self) -> list[list[str]]:
        """Per-row list of the role name at each position ("other" for separators/BOS)."""
        out = [["other"] * self.seq_len for _ in range(self.batch_size)]
        for role in ("demo_text", "forerunner", "label", "query_text", "readout", "pad"):
            m = self.role_mask(role)
            for b, p in m.nonzero().tolist():
                out[b][p] = role
        return out

    # ------------------------------------------------------------------ batching
    def __len__(self) -> int:
        return self.batch_size

    def select(self, rows: Sequence[int] | slice | Tensor) -> "PromptBatch":
        """A sub-batch of the given rows (trailing all-pad columns kept)."""
        if isinstance(rows, slice):
            rows = list(range(self.batch_size))[rows]
        rows = torch.as_tensor(rows, dtype=torch.long)
        kw: dict[str, Any] = {}
        for name in TENSOR_FIELDS:
            val = getattr(self, name)
            kw[name] = None if val is None else val[rows]
        return replace(self, **kw)

    def batches(self, size: int) -> Iterable["PromptBatch"]:
        for start in range(0, self.batch_size, size):
            yield self.select(slice(start, start + size))

    def to_list(self) -> list["PromptBatch"]:
        """One unpadded PromptBatch per row (for looped-vs-batched checks)."""
        out = []
        for b in range(self.batch_size):
            row = self.select([b])
            out.append(row.trim())
        return out

    def trim(self) -> "PromptBatch":
        """Drop trailing columns that are padding in every row."""
        T = int(self.lengths.max().item())
        return replace(self, tokens=self.tokens[:, :T])

    @staticmethod
    def concat(batches: Sequence["PromptBatch"]) -> "PromptBatch":
        """Stack batches (right-padding tokens and demonstration slots as needed)."""
        if not batches:
            raise PromptError("concat needs at least one PromptBatch")
        pad_id = batches[0].pad_id
        T = max(b.seq_len for b in batches)
        K = max(b.n_demos for b in batches)

        def pad(t: Tensor, dim: int, size: int, value: int) -> Tensor:
            if t.shape[dim] == size:
                return t
            shape = list(t.shape)
            shape[dim] = size - t.shape[dim]
            return torch.cat([t, torch.full(shape, value, dtype=t.dtype)], dim=dim)

        kw: dict[str, Any] = {
            "tokens": torch.cat([pad(b.tokens, 1, T, pad_id) for b in batches]),
            "demo_text": torch.cat([pad(b.demo_text, 1, K, -1) for b in batches]),
            "forerunner": torch.cat([pad(b.forerunner, 1, K, -1) for b in batches]),
            "label": torch.cat([pad(b.label, 1, K, -1) for b in batches]),
        }
        for name in ("lengths", "query_text", "readout", "target", "query_class"):
            vals = [getattr(b, name) for b in batches]
            kw[name] = None if any(v is None for v in vals) else torch.cat(vals)
        dc = [b.demo_class for b in batches if b.demo_class is not None]
        kw["demo_class"] = None if len(dc) < len(batches) else torch.cat([pad(v, 1, K, -1) for v in dc])
        cands = [b.candidates for b in batches if b.candidates is not None]
        if len(cands) < len(batches):
            kw["candidates"] = None
        else:
            C = max(c.shape[1] for c in cands)
            kw["candidates"] = torch.cat([pad(c, 1, C, -1) for c in cands])
        return PromptBatch(pad_id=pad_id, meta=dict(batches[0].meta), **kw)

    # ------------------------------------------------------------------ edits
    def zero_shot(self) -> "PromptBatch":
        """Every row with its demonstrations removed: the tokens before the first demonstration
        (BOS, an instruction), then ``x_q s_q``; the same target, candidates and query class."""
        out = self._reorder_demos([[] for _ in range(self.batch_size)])
        out.meta.update(k=0, zero_shot_of=self.meta.get("task", ""))
        return out

    def permute_demos(self, perms: Sequence[Sequence[int]] | None = None, seed: int = 0) -> "PromptBatch":
        """Every row with its demonstrations (each with the separator after it) in a new order:
        ``perms[b]`` for row b, or a random order per row drawn from ``seed``."""
        ks = [int(m.sum()) for m in self.demo_mask]
        if perms is None:
            g = torch.Generator().manual_seed(seed)
            perms = [torch.randperm(k, generator=g).tolist() for k in ks]
        if len(perms) != self.batch_size:
            raise PromptError(f"permute_demos needs one order per row ({self.batch_size}), got {len(perms)}")
        for b, (perm, k) in enumerate(zip(perms, ks)):
            if sorted(int(i) for i in perm) != list(range(k)):
                raise PromptError(f"row {b}: the order must be a permutation of 0..{k - 1}, got {list(perm)}")
        return self._reorder_demos([[int(i) for i in perm] for perm in perms])

    def shuffle_labels(self, seed: int = 0) -> "PromptBatch":
        """The same prompts with each row's demonstration labels permuted among its
        demonstrations (Todd et al.'s corrupted prompts: the input -> label mapping is broken)."""
        g = torch.Generator().manual_seed(seed)
        tokens = self.tokens.clone()
        for b in range(self.batch_size):
            pos = self.label[b][self.demo_mask[b]]
            if len(pos) >= 2:
                tokens[b, pos] = self.tokens[b, pos[torch.randperm(len(pos), generator=g)]]
        return replace(self, tokens=tokens, meta={**self.meta, "shuffled_labels": seed})

    def _reorder_demos(self, orders: list[list[int]]) -> "PromptBatch":
        """Rows rebuilt as header + the demonstrations ``orders[b]`` + the query (positions moved)."""
        K = max((len(o) for o in orders), default=0)
        B = self.batch_size
        rows, dt, fr, lab = [], torch.full((B, K, 2), -1), torch.full((B, K), -1), torch.full((B, K), -1)
        cls = None if self.demo_class is None else torch.full((B, K), -1)
        qt, ro = self.query_text.clone(), self.readout.clone()
        for b, order in enumerate(orders):
            toks, qs = self.tokens[b, : int(self.lengths[b])].tolist(), int(self.query_text[b, 0])
            starts = [int(self.demo_text[b, i, 0]) for i in range(int(self.demo_mask[b].sum()))] + [qs]
            row = toks[: starts[0]]
            for j, i in enumerate(order):
                shift = len(row) - starts[i]
                row += toks[starts[i]: starts[i + 1]]
                dt[b, j] = self.demo_text[b, i] + shift
                fr[b, j], lab[b, j] = self.forerunner[b, i] + shift, self.label[b, i] + shift
                if cls is not None and self.demo_class is not None:
                    cls[b, j] = self.demo_class[b, i]
            shift = len(row) - qs
            rows.append(row + toks[qs:])
            qt[b], ro[b] = self.query_text[b] + shift, self.readout[b] + shift
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        tokens = torch.full((B, int(lengths.max()) if B else 0), self.pad_id, dtype=torch.long)
        for b, r in enumerate(rows):
            tokens[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        return replace(self, tokens=tokens, lengths=lengths, demo_text=dt.long(), forerunner=fr.long(),
                       label=lab.long(), query_text=qt, readout=ro, demo_class=cls, meta=dict(self.meta))

    # ------------------------------------------------------------------ validation
    def require_rows(self, what: str) -> "PromptBatch":
        """This batch, or a PromptError when it has no prompts (``what`` names the consumer)."""
        if self.batch_size == 0:
            raise PromptError(f"{what} got an empty batch (0 prompts); build it with n_prompts >= 1 "
                              f"or select at least one row")
        return self

    def check_vocab(self, d_vocab: int) -> None:
        """PromptError when a real token id lies outside a vocabulary of ``d_vocab`` tokens."""
        real = self.tokens[self.attention_mask]
        if real.numel() and (int(real.min()) < 0 or int(real.max()) >= d_vocab):
            bad = int(real.max()) if int(real.max()) >= d_vocab else int(real.min())
            raise PromptError(f"token id {bad} is outside the model's vocabulary (0..{d_vocab - 1}); "
                              f"build the prompts with this model's tokenizer or task vocabulary")

    def validate(self, n_ctx: int | None = None) -> None:
        """Check the layout; with ``n_ctx``, also that every prompt fits the model's context."""
        check_layout(self, n_ctx)


TENSOR_FIELDS = (
    "tokens", "lengths", "demo_text", "forerunner", "label", "query_text", "readout",
    "target", "candidates", "demo_class", "query_class",
)


# ---------------------------------------------------------------------- building prompts
@dataclass
class Segment:
    """A run of tokens with one role. ``demo`` is the demonstration index for demo roles."""

    tokens: list[int]
    role: str = "other"
    demo: int | None = None


class PromptBuilder:
    """Assemble one prompt from role-tagged segments, recording positions as it goes.

    >>> pb = PromptBuilder()
    >>> pb.add([BOS])                        # untagged
    >>> pb.demo(x_tokens, forerunner_tok, label_tok)   # x_i, s_i, y_i
    >>> pb.add([SEP])                        # separator between demonstrations
    >>> pb.query(xq_tokens, forerunner_tok)  # x_q, s_q
    >>> row = pb.build(target=answer_tok)
    """

    def __init__(self, d_vocab: int | None = None) -> None:
        self.d_vocab = d_vocab
        """When given, every token id must lie in 0..d_vocab-1."""
        self.tokens: list[int] = []
        self.demo_spans: list[tuple[int, int]] = []
        self.forerunners: list[int] = []
        self.labels: list[int] = []
        self.query_span: tuple[int, int] | None = None
        self.demo_classes: list[int] = []

    def add(self, tokens: Sequence[int]) -> "PromptBuilder":
        ids = [int(t) for t in tokens]
        if self.d_vocab is not None:
            for t in ids:
                self._check_id(t, "token")
        self.tokens.extend(ids)
        return self

    def _check_id(self, t: int, what: str) -> None:
        if t < 0 or (self.d_vocab is not None and t >= self.d_vocab):
            top = f"0..{self.d_vocab - 1}" if self.d_vocab is not None else "ids >= 0"
            raise PromptError(f"{what} id {t} is outside the vocabulary ({top}); use this model's "
                              f"tokenizer (probes.prompt.single_token_id) or task vocabulary")

    def _label_id(self, label: Any) -> int:
        """The label as one token id (a 1-element sequence is accepted)."""
        if isinstance(label, torch.Tensor):
            label = label.tolist()
        if isinstance(label, (list, tuple)):
            if len(label) != 1:
                raise PromptError(
                    f"a label must be a single token, got {len(label)} tokens {list(label)}; pick a "
                    f"label that encodes to one token (probes.prompt.single_token_id checks it)")
            label = label[0]
        if isinstance(label, bool) or not isinstance(label, int):
            raise PromptError(f"a label must be one token id (an int), got {type(label).__name__} {label!r}")
        self._check_id(label, "label")
        return label

    def demo(
        self,
        text: Sequence[int],
        forerunner: Sequence[int] | int,
        label: int,
        cls: int = -1,
    ) -> "PromptBuilder":
        """Append x_i, then the forerunner tokens (the last one is s_i), then y_i (one token)."""
        if self.query_span is not None:
            raise PromptError("demonstrations must come before the query")
        label = self._label_id(label)
        self.demo_spans.append(self._text_then_forerunner(text, forerunner, "a demonstration"))
        self.forerunners.append(len(self.tokens) - 1)
        self.labels.append(len(self.tokens))
        self.add([label])
        self.demo_classes.append(cls)
        return self

    def query(self, text: Sequence[int], forerunner: Sequence[int] | int) -> "PromptBuilder":
        """Append x_q, then the forerunner tokens; the last one is s_q, the read-out position."""
        self.query_span = self._text_then_forerunner(text, forerunner, "the query")
        return self

    def _text_then_forerunner(self, text: Sequence[int], forerunner: Sequence[int] | int,
                              what: str) -> tuple[int, int]:
        """Append the text and forerunner tokens; return the text span.

        No forerunner tokens (``()``) with no text means the last token already in the prompt (a
        separator or BOS) is the forerunner, e.g. for a one-letter string or a query cut at a
        string boundary; the text span is then empty.
        """
        fr = [forerunner] if isinstance(forerunner, int) else list(forerunner)
        if not fr:
            if len(text) or not self.tokens:
                raise PromptError(
                    f"{what} needs a forerunner token; pass forerunner=() only with empty text, to "
                    f"reuse the last token already in the prompt")
            last = len(self.tokens) - 1
            return last, last
        start = len(self.tokens)
        self.add(text)
        span = (start, len(self.tokens))
        self.add(fr)
        return span

    def build(
        self,
        target: int = -1,
        candidates: Sequence[int] | None = None,
        query_class: int = -1,
        pad_id: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> PromptBatch:
        if self.query_span is None:
            raise PromptError("call query(...) before build(): every prompt ends with a query")
        k = len(self.forerunners)
        return PromptBatch(
            tokens=torch.tensor([self.tokens], dtype=torch.long),
            lengths=torch.tensor([len(self.tokens)]),
            demo_text=torch.tensor(self.demo_spans, dtype=torch.long).reshape(1, k, 2),
            forerunner=torch.tensor([self.forerunners], dtype=torch.long).reshape(1, k),
            label=torch.tensor([self.labels], dtype=torch.long).reshape(1, k),
            query_text=torch.tensor([self.query_span], dtype=torch.long),
            readout=torch.tensor([len(self.tokens) - 1]),
            target=torch.tensor([target]),
            candidates=None if candidates is None else torch.tensor([list(candidates)]),
            demo_class=torch.tensor([self.demo_classes], dtype=torch.long).reshape(1, k),
            query_class=torch.tensor([query_class]),
            pad_id=pad_id,
            meta=dict(meta or {}),
        )


def single_token_id(tokenizer: Any, text: str, what: str = "label") -> int:
    """The one token id that ``text`` encodes to, or a PromptError that says how to fix it."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise PromptError(
            f"{what} {text!r} is {len(ids)} tokens under this tokenizer ({pieces}); labels must "
            f"be single tokens: pick another word, or add/remove a leading space"
        )
    return int(ids[0])

"""The pieces every text task shares: ``Dataset`` (input/answer pairs, optionally classes),
``Template`` (a demonstration template split into separately tokenized pieces) and the
multi-token answer rule (``answer_ids``, ``answer_counts``). Used by ``language`` (the built-in
word lists), ``suite`` (Todd et al.'s datasets) and ``taskfile`` (your own files)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from experiments.tasks.base import TaskError
from probes.prompt import single_token_id

DEFAULT_TEMPLATE = "Word: {x}\nLabel: {y}\n"
OPEN_TEMPLATE = "{x}: {y}\n"
"""Default of the open-vocabulary datasets: under "Word: x\nLabel:" SmolLM2 mostly copies x
(capitals top-1 0.13 at k=3), under "x: y" it infers the relation (0.68 at k=3, 0.0 at k=0)."""


@dataclass(frozen=True)
class Dataset:
    """A list of (input, answer) pairs. With ``classes`` set, answers are class indices."""

    name: str
    description: str
    items: tuple[tuple[str, Any], ...]
    classes: tuple[str, ...] | None = None
    """Class names; the natural label of class c is ``" " + classes[c]``."""
    label_sets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    template: str = "Word: {x}\nLabel: {y}\n"
    """Default template of this dataset (``make_prompts(template=None)``)."""

    @property
    def is_classification(self) -> bool:
        return self.classes is not None



# ---------------------------------------------------------------------- templates
@dataclass(frozen=True)
class Template:
    """A demonstration template split into the pieces that are tokenized on their own.

    ``"Word: {x}\\nLabel: {y}\\n"`` -> prefix ``"Word:"``, x space ``" "``, middle ``"\\nLabel:"``,
    y space ``" "``, suffix ``"\\n"``. The space before {x}/{y} is glued to the word.
    """

    prefix: str
    x_space: str
    middle: str
    y_space: str
    suffix: str

    @staticmethod
    def parse(template: str) -> "Template":
        if template.count("{x}") != 1 or template.count("{y}") != 1 or (
            template.index("{x}") > template.index("{y}")
        ):
            raise TaskError(
                f"template {template!r} must contain '{{x}}' once and then '{{y}}' once, "
                f"e.g. {DEFAULT_TEMPLATE!r}"
            )
        prefix, rest = template.split("{x}")
        middle, suffix = rest.split("{y}")
        x_space = " " if prefix.endswith(" ") else ""
        y_space = " " if middle.endswith(" ") else ""
        prefix, middle = prefix[: len(prefix) - len(x_space)], middle[: len(middle) - len(y_space)]
        if not middle:
            raise TaskError(
                f"template {template!r} needs text between {{x}} and {{y}} (e.g. '\\nLabel:'): its "
                f"last token is the forerunner, where the label is predicted"
            )
        return Template(prefix, x_space, middle, y_space, suffix)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


# ---------------------------------------------------------------------- prompts
MultiToken = Literal["first", "drop", "error"]


def _answer_ids(tokenizer: Any, y_space: str, pairs: Sequence[tuple[str, str]],
                multi_token: MultiToken, what: str) -> tuple[list[list[int] | None], dict[str, int]]:
    """The token ids of each answer under the multi-token rule (None where the item is dropped),
    and counts: ``single`` (one-token answers), ``ambiguous`` (dropped by the first-token rule),
    ``multi`` (answers of several tokens)."""
    enc = {y: _encode(tokenizer, y_space + y) for y in {y for _, y in pairs}}
    first_owner: dict[int, set[str]] = {}
    for y, ids in enc.items():
        if ids:
            first_owner.setdefault(ids[0], set()).add(y)
    out: list[list[int] | None] = []
    counts = {"single": 0, "ambiguous": 0, "multi": 0}
    for _, y in pairs:
        ids = enc[y]
        if len(ids) == 1:
            counts["single"] += 1
        elif ids:
            counts["multi"] += 1
        if len(ids) != 1 and multi_token == "error":
            single_token_id(tokenizer, y_space + y, what=f"{what} answer")  # raises with the pieces
        if not ids or (multi_token == "drop" and len(ids) != 1):
            out.append(None)
        elif multi_token == "first" and len(first_owner[ids[0]]) > 1:
            counts["ambiguous"] += 1
            out.append(None)
        else:
            out.append(ids)
    return out, counts


def _space_rule(tokenizer: Any, tpl: Template, answers: Sequence[str]) -> Template:
    """The template with the space before ``{y}`` moved into the label prefix when most answers
    would start with a bare-space token (numbers under Llama-style tokenizers: ``" 5"`` is
    ``" " "5"``); otherwise every such answer would share that first token and be dropped."""
    if tpl.y_space != " " or not answers:
        return tpl
    sample = sorted(set(answers))[:200]
    bare = sum(1 for y in sample if (ids := _encode(tokenizer, " " + y))
               and not tokenizer.decode([ids[0]]).strip())
    if bare * 2 <= len(sample):
        return tpl
    return Template(tpl.prefix, tpl.x_space, tpl.middle + " ", "", tpl.suffix)



def answer_counts(tokenizer: Any, ds: Dataset, template: str | None = None) -> dict[str, int]:
    """How many items of ``dataset`` each multi-token rule keeps under ``tokenizer``:
    ``n_items``, ``single_token`` (answers of one token: what ``"drop"`` keeps), ``multi_token``,
    ``kept_first`` (what the default first-token rule keeps), ``ambiguous_first`` (dropped by it)."""
    tpl = Template.parse(ds.template if template is None else template)
    if ds.is_classification:
        assert ds.classes is not None
        pairs = [(x, ds.classes[c]) for x, c in ds.items]
    else:
        pairs = [(x, str(y)) for x, y in ds.items]
        tpl = _space_rule(tokenizer, tpl, [y for _, y in pairs])
    ids, counts = _answer_ids(tokenizer, tpl.y_space, pairs, "first", ds.name)
    return {"n_items": len(pairs), "single_token": counts["single"], "multi_token": counts["multi"],
            "kept_first": sum(i is not None for i in ids), "ambiguous_first": counts["ambiguous"]}

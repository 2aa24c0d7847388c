"""Prompts for the app: task prompts through the one task contract (``experiments.tasks.task_batch``)
or a typed prompt, as a ``PromptBatch``."""

from __future__ import annotations

from typing import Any

from experiments import tasks
from experiments.tasks import kv_recall, language
from iclwb_app.model_info import (
    AppInputError,
    card_task_name,
    model_kind,
    token_symbols,
)
from probes.errors import WorkbenchError
from probes.hooked import HookedModel
from probes.prompt import PromptBatch, PromptBuilder, PromptError, single_token_id

FALLBACK_TASKS: tuple[str, ...] = ("kv-recall",)
MAX_PROMPT_CHARS = 20_000


def _own_task_first(model: HookedModel, names: list[str]) -> list[str]:
    own = card_task_name(model)
    return sorted(names, key=lambda n: (not (own and (own == n or own.startswith(n))), names.index(n)))


def language_task_names() -> list[str]:
    """Text tasks for a model with a tokenizer: ``language:DATASET`` (sentiment, capitals, ...)
    then the standard suite ``fv:NAME`` (task files are typed in as ``file:PATH``)."""
    return [t for t in tasks.catalog() if tasks.is_text_task(t)]


def available_tasks(model: HookedModel) -> list[str]:
    """Tasks the explorer can build a prompt of for ``model``: the token tasks of
    ``experiments.tasks`` whose vocabulary fits the model (its own training task first, then
    ``kv-recall``, which fits any vocabulary); for text models, the language tasks."""
    kind = model_kind(model)
    if kind == "vector":
        return []
    if kind == "text":
        return language_task_names()
    vocab = int(model.cfg.d_vocab)
    names = [n for n in tasks.TOKEN_TASKS if n not in FALLBACK_TASKS
             and int(getattr(tasks.get_task(n), "VOCAB_SIZE", vocab)) <= vocab]
    return _own_task_first(model, names) + list(FALLBACK_TASKS)


def task_options(model: HookedModel, task: str) -> dict[str, Any]:
    """Model-dependent options of ``task``: kv-recall draws from the model's whole vocabulary."""
    return {"vocab": int(model.cfg.d_vocab)} if task == "kv-recall" else {}


def task_prompt(model: HookedModel, task: str, k: int, seed: int = 0) -> PromptBatch:
    """One prompt of ``task`` with ``k`` demonstrations for ``model`` (deterministic in ``seed``)."""
    batch = task_batch(model, task, k, 1, seed).select([0]).trim()
    check_prompt_fits(model, batch)
    return batch


def kv_recall_prompt(vocab: int, k: int, seed: int = 0) -> PromptBatch:
    """One kv-recall prompt over ``vocab`` tokens (``experiments.tasks.kv_recall``)."""
    try:
        return kv_recall.prompt(vocab, k, seed)
    except kv_recall.KVRecallError as err:
        raise AppInputError(str(err)) from None


def parse_prompt(model: HookedModel, text: str) -> PromptBatch:
    """A typed prompt as a one-row ``PromptBatch``.

    Token-id models: whitespace-separated token ids (or the model's symbols); ``|`` separates
    demonstrations. In each demonstration the last token is the label y_i, the one before it the
    forerunner s_i, the rest x_i; in the final segment the last token is the read-out s_q. Without
    ``|`` the whole list is the query: ``"5 9 12 5 9"``.

    Text models: one demonstration per line, ``input: label`` (the label must be one token); the
    last line is the query and ends with ``:``. A single line without ``:`` is read as plain text
    with its last token as the read-out.
    """
    if not text or not text.strip():
        raise PromptError("the prompt is empty: type a prompt or pick a task")
    if len(text) > MAX_PROMPT_CHARS:
        raise PromptError(f"the prompt has {len(text)} characters; the app accepts at most "
                          f"{MAX_PROMPT_CHARS}")
    kind = model_kind(model)
    if kind == "vector":
        raise PromptError("this model reads real vectors, not tokens: typed prompts do not apply; "
                          "use the ICL vs GD page for it")
    batch = _parse_text_prompt(model, text) if kind == "text" else _parse_token_prompt(model, text)
    check_prompt_fits(model, batch)
    return batch


def _token_id(model: HookedModel, piece: str) -> int:
    vocab = int(model.cfg.d_vocab)
    syms = token_symbols(model)
    if syms and piece in syms:
        return syms.index(piece)
    try:
        tid = int(piece)
    except ValueError:
        hint = f" or one of the symbols {syms[:12]}" if syms else ""
        raise PromptError(f"token {piece!r} is not a token id; type integers 0..{vocab - 1}{hint}, "
                          f"separated by spaces") from None
    if not 0 <= tid < vocab:
        raise PromptError(f"token id {tid} is outside the vocabulary (0..{vocab - 1})")
    return tid


def _parse_token_prompt(model: HookedModel, text: str) -> PromptBatch:
    segments = [s.split() for s in text.strip().split("|")]
    if any(not s for s in segments):
        raise PromptError("an empty segment between '|' separators; remove the extra '|'")
    pb = PromptBuilder()
    for i, seg in enumerate(segments[:-1]):
        ids = [_token_id(model, p) for p in seg]
        if len(ids) < 2:
            raise PromptError(f"demonstration {i} ({' '.join(seg)!r}) needs at least a forerunner "
                              f"and a label token")
        pb.demo(ids[:-2], ids[-2], ids[-1])
    q = [_token_id(model, p) for p in segments[-1]]
    pb.query(q[:-1], q[-1])
    return pb.build(meta={"task": "typed"})


def _parse_text_prompt(model: HookedModel, text: str) -> PromptBatch:

    tok = model.tokenizer

    def enc(s: str) -> list[int]:
        return list(tok.encode(s, add_special_tokens=False))

    lines = [ln for ln in text.strip().split("\n") if ln.strip()]
    pb = PromptBuilder()
    bos = getattr(tok, "bos_token_id", None)
    if bos is not None:
        pb.add([bos])
    newline = enc("\n")
    structured = lines[-1].rstrip().endswith(":")
    if not structured and (len(lines) > 1 or ":" in text):
        raise PromptError(f"the last line ({lines[-1].strip()!r}) must end with ':' (the query, whose "
                          f"label the model predicts), e.g. 'loved it:'; demonstrations above it are "
                          f"'input: label'. A single line without ':' is read as plain text")
    if not structured:
        ids = enc(text.strip())
        if len(ids) < 1:
            raise PromptError("the prompt encodes to no tokens")
        pb.query(ids[:-1], ids[-1])
        return pb.build(pad_id=_pad_id(tok), meta={"task": "typed"})
    labels: list[int] = []
    for i, line in enumerate(lines[:-1]):
        if ":" not in line:
            raise PromptError(f"demonstration line {i + 1} ({line!r}) has no ':'; write it as "
                              f"'input: label'")
        x, y = line.rsplit(":", 1)
        if not y.strip():
            raise PromptError(f"demonstration line {i + 1} ({line!r}) has no label after ':'")
        lab = single_token_id(tok, " " + y.strip(), what="label")
        labels.append(lab)
        pb.demo(enc(x.rstrip()), enc(":"), lab)
        pb.add(newline)
    q = lines[-1].rstrip()[:-1]
    pb.query(enc(q.rstrip()), enc(":"))
    cands = sorted(set(labels)) or None
    return pb.build(candidates=cands, pad_id=_pad_id(tok), meta={"task": "typed"})


def _pad_id(tok: Any) -> int:
    pid = getattr(tok, "pad_token_id", None)
    return int(pid) if pid is not None else 0


def check_prompt_fits(model: HookedModel, batch: PromptBatch) -> None:
    """PromptError when the prompt is longer than the model's context."""
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    if n_ctx is not None:
        batch.validate(n_ctx=int(n_ctx))


def max_k(model: HookedModel, task: str, limit: int = 256) -> int:
    """The largest k whose prompt of ``task`` fits the model's context (at most ``limit``): from
    the lengths of prompts with 1, 2 and 3 demonstrations (the longest step per demonstration, so
    text tasks with longer examples are bounded too). ``limit`` when the task cannot be measured."""
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    if n_ctx is None:
        return limit
    try:
        lens = [task_batch(model, task, k, 4, seed=0).seq_len for k in (1, 2, 3)]
    except (ValueError, KeyError):
        return limit
    per = max(max(b - a for a, b in zip(lens, lens[1:])), 1)
    hi = int(max(0, min(limit, 1 + (int(n_ctx) - lens[0]) // per)))

    def fits(k: int) -> bool:
        try:
            task_prompt(model, task, k, 0)
            return True
        except ValueError:
            return False
    if fits(hi):
        return hi
    lo = 0  # another bound (e.g. kv-recall's distinct tokens): the largest k that builds
    while lo < hi - 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def task_batch(model: HookedModel, task: str, k: int, n_prompts: int, seed: int = 0) -> PromptBatch:
    """``n_prompts`` prompts of ``task`` at ``k`` for ``model`` (the explorer's prompt is row 0)."""
    if n_prompts < 1:
        raise AppInputError(f"n_prompts must be at least 1, got {n_prompts}")
    if k < 0:
        raise AppInputError(f"k must be at least 0, got {k}")
    if task == "language":
        task = "language:sentiment"
    if tasks.is_text_task(task):
        if getattr(model, "tokenizer", None) is None:
            raise AppInputError(f"task {task!r} is text: it needs a model with a tokenizer "
                                f"(smollm2-135m, gemma3-270m)")
    elif task not in tasks.TOKEN_TASKS:
        raise AppInputError(f"unknown task {task!r}; available for this model: "
                            f"{', '.join(available_tasks(model))}")
    try:
        return tasks.task_batch(task, k, n_prompts, seed, tokenizer=getattr(model, "tokenizer", None),
                                **task_options(model, task))
    except WorkbenchError as err:
        raise AppInputError(str(err)) from None


def circuit_tasks(model: HookedModel) -> list[str]:
    """Tasks with a label set (candidates), which the summarize-merge-retrieve circuit needs."""
    out = []
    for task in available_tasks(model):
        if tasks.is_text_task(task):  # decided by the dataset, no tokenizing
            name = task if not task.startswith("language:") else task.split(":", 1)[1]
            if language.get_dataset(name).is_classification:
                out.append(task)
            continue
        try:
            b = task_batch(model, task, 1, 1, 0)
        except WorkbenchError:  # a task that cannot build a 1-shot prompt for this model is not offered
            continue
        if b.candidates is not None:
            out.append(task)
    own = _own_task_first(model, [t for t in out if t != "kv-recall"])
    own_matches = own[:1] if own and card_task_name(model).startswith(own[0]) else []
    rest = [t for t in out if t not in own_matches and t != "kv-recall"]
    return own_matches + (["kv-recall"] if "kv-recall" in out else []) + rest

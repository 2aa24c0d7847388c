"""Task 5: natural-language ICL tasks for pretrained models, on small datasets written here.

Datasets (``DATASETS``; ``datasets`` lists their names):

- ``sentiment``: single words, 53 positive and 50 negative (classes 0 = positive, 1 = negative);
- ``sentiment-phrases``: short phrases, 40 positive and 40 negative (same classes);
- ``capitals``: country -> capital city (46 pairs);
- ``antonyms``: word -> its opposite (50 pairs);
- ``uppercase``: lowercase word -> the same word in capitals (57 words);
- ``en-fr``: English word -> French word (41 pairs, none spelled the same in both languages).

plus every task of the standard suite (``fv:NAME``: the 39 datasets of Todd et al. 2024, see
``experiments.tasks.suite``) and your own task files (``file:PATH``: JSONL or CSV, see
``experiments.tasks.taskfile``); ``make_prompts`` also takes a ``Dataset`` object.

**Multi-token answers: the first-token rule** (``multi_token="first"``, the default). An answer
is scored by its *first* token (with its leading space): the read-out's target is that token and
accuracy is top-1 (open vocabulary) or the argmax among the candidates. In demonstrations the
whole answer is written out (the label role ``y_i`` is its first token; the rest follows as plain
text), so prompts read naturally. An item is kept unless another answer of the dataset with a
different text starts with the same token (first-token accuracy could not tell them apart); the
count of such items is ``batch.meta["dropped"]`` and ``suite.item_report`` reports it per task and
tokenizer. ``multi_token="drop"`` keeps only single-token answers (the earlier rule),
``"error"`` raises on the first multi-token answer. Labels of a classification label set must
have distinct first tokens (and be single tokens under ``"drop"``/``"error"``).
If most answers of an open dataset would begin with a bare-space token (numbers under
Llama-style tokenizers: ``" 5"`` is ``" " "5"``), the space moves into the label prefix (it ends
with ``": "`` and the answer is written without a leading space). The built-in open datasets
were written so that each answer is one token under SmolLM2.

Prompt layout (template ``"Word: {x}\\nLabel: {y}\\n"``, the default of the sentiment datasets;
the open-vocabulary datasets default to ``"{x}: {y}\\n"``, see ``OPEN_TEMPLATE``)::

    [BOS] Word: x_1\\nLabel: y_1\\n ... Word: x_k\\nLabel: y_k\\nWord: x_q\\nLabel:

Each piece is tokenized on its own and the pieces are concatenated with ``PromptBuilder``, so role
positions are exact by construction. **Leading-space convention**: a space just before ``{x}`` or
``{y}`` in the template belongs to the word, as GPT-2/Llama-3-style BPE tokenizers write it
(``" positive"`` is one token, ``"positive"`` after ``": "`` would be a stray space token). So the
default template tokenizes as ``"Word" ":" | " x" | "\\n" "Label" ":" | " y" | "\\n"``; this matches
the tokenization of the whole string for SmolLM2.

Roles: ``demo_text[i]`` = the tokens of x_i (with its leading space); ``forerunner[i]`` = the last
token of the label prefix (the ``:`` of ``Label:``); ``label[i]`` = y_i's single token;
``query_text`` = x_q's tokens; ``readout`` = the query's ``:``; ``target`` = the correct answer's
token under the chosen label set.

Label sets (classification datasets only): ``"natural"`` (" positive"/" negative"), ``"flipped"``
(the natural labels swapped: positive items are labelled " negative" in the demonstrations, and the
target follows the demonstrations), ``"arbitrary"`` (" foo"/" bar"), or a tuple of label strings,
one per class. ``candidates`` = the label set's tokens (accuracy is the argmax among them, chance
1/#classes); ``demo_class``/``query_class`` = the class index (0 positive, 1 negative).

Open-vocabulary datasets (capitals, antonyms, uppercase, en-fr) have only the natural label set;
``candidates`` is None, so ``probes.readout.accuracy`` is top-1 over the whole vocabulary (the
measure the issue quotes for capitals); ``meta["answer_tokens"]`` holds the tokens of every answer
in the dataset for a restricted scoring if wanted; ``demo_class``/``query_class`` are -1.

Sampling (deterministic in ``seed``): for classification datasets the query's class is uniform and
demonstrations are drawn uniformly from the other items (so their classes are random); for open
datasets the k demonstrations and the query are k+1 distinct items.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from experiments.tasks import suite, taskfile
from experiments.tasks.base import TaskError, check_n_prompts
from experiments.tasks.text import (
    DEFAULT_TEMPLATE,
    OPEN_TEMPLATE,
    Dataset,
    MultiToken,
    Template,
    _answer_ids,
    _encode,
    _space_rule,
    answer_counts,
)
from probes.prompt import PromptBatch, PromptBuilder, PromptError, single_token_id
from probes.readout import model_accuracy

# ---------------------------------------------------------------------- the data
POSITIVE_WORDS = """happy good great wonderful excellent love joy beautiful amazing delightful
pleasant kind brilliant cheerful fantastic lovely perfect nice awesome glad success win hope peace
smile friendly gentle generous proud calm bright fun best charming superb fresh healthy warm grateful
thrilled excited laugh treasure victory sunshine gift blessing comfort elegant honest brave
delicious paradise""".split()

NEGATIVE_WORDS = """sad bad terrible awful horrible hate pain ugly angry disgusting nasty cruel
miserable poor worst evil fear failure lose death disaster broken sick rude boring lonely hurt
stupid annoying dirty weak worried gloomy bitter painful tragic hostile filthy fail war crime grief
shame guilt misery rotten dreadful toxic violent greedy""".split()

POSITIVE_PHRASES = [
    "a great day", "truly wonderful", "I love it", "very happy", "so much fun",
    "the best meal ever", "a perfect gift", "highly recommended", "works like a charm",
    "a joy to watch", "beautiful and kind", "what a lovely surprise", "simply amazing",
    "an excellent choice", "made my day", "pure delight", "a warm welcome", "well done",
    "brilliant work", "feeling great", "a happy ending", "full of hope", "so proud of you",
    "a big success", "absolutely fantastic", "worth every penny", "a fun evening",
    "very friendly staff", "the view was stunning", "a great friend", "it tastes delicious",
    "such a nice person", "a fresh start", "we won the game", "smooth and easy",
    "a true masterpiece", "I feel wonderful", "a pleasant trip", "clean and bright",
    "kind and generous",
]

NEGATIVE_PHRASES = [
    "a terrible day", "truly awful", "I hate it", "very sad", "so boring",
    "the worst meal ever", "a total waste", "not recommended", "it broke at once",
    "painful to watch", "rude and cruel", "what a nasty surprise", "simply horrible",
    "a poor choice", "ruined my day", "pure misery", "a cold welcome", "badly done",
    "sloppy work", "feeling sick", "a tragic ending", "full of fear", "so ashamed of you",
    "a big failure", "absolutely dreadful", "a waste of money", "a dull evening",
    "very rude staff", "the room was filthy", "a false friend", "it tastes disgusting",
    "such a mean person", "a bad start", "we lost the game", "slow and painful",
    "a complete disaster", "I feel terrible", "an awful trip", "dirty and dark",
    "cruel and greedy",
]

CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Japan", "Tokyo"), ("China", "Beijing"), ("Russia", "Moscow"), ("England", "London"),
    ("Egypt", "Cairo"), ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Austria", "Vienna"),
    ("Ireland", "Dublin"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Denmark", "Copenhagen"), ("Finland", "Helsinki"), ("Poland", "Warsaw"),
    ("Hungary", "Budapest"), ("Czechia", "Prague"), ("Belgium", "Brussels"),
    ("Netherlands", "Amsterdam"), ("Switzerland", "Bern"), ("India", "Delhi"),
    ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Chile", "Santiago"), ("Cuba", "Havana"),
    ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Iran", "Tehran"), ("Iraq", "Baghdad"),
    ("Syria", "Damascus"), ("Israel", "Jerusalem"), ("Afghanistan", "Kabul"),
    ("Philippines", "Manila"), ("South Korea", "Seoul"), ("Bulgaria", "Sofia"),
    ("Scotland", "Edinburgh"), ("Wales", "Cardiff"), ("Jamaica", "Kingston"),
    ("Tunisia", "Tunis"), ("United States", "Washington"), ("New Zealand", "Wellington"),
    ("Luxembourg", "Luxembourg"), ("Singapore", "Singapore"),
]

ANTONYMS = [
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("happy", "sad"),
    ("good", "bad"), ("light", "dark"), ("old", "new"), ("open", "closed"), ("rich", "poor"),
    ("high", "low"), ("early", "late"), ("strong", "weak"), ("hard", "soft"), ("long", "short"),
    ("full", "empty"), ("wet", "dry"), ("clean", "dirty"), ("true", "false"), ("win", "lose"),
    ("in", "out"), ("left", "right"), ("black", "white"), ("day", "night"), ("love", "hate"),
    ("push", "pull"), ("buy", "sell"), ("give", "take"), ("begin", "end"), ("first", "last"),
    ("alive", "dead"), ("inside", "outside"), ("above", "below"), ("before", "after"),
    ("thick", "thin"), ("wide", "narrow"), ("loud", "quiet"), ("cheap", "expensive"),
    ("deep", "shallow"), ("friend", "enemy"), ("yes", "no"), ("north", "south"),
    ("east", "west"), ("male", "female"), ("asleep", "awake"), ("front", "back"),
    ("sweet", "sour"), ("top", "bottom"), ("accept", "reject"), ("increase", "decrease"),
]

UPPERCASE_WORDS = """the and new one man car red big top end not for all cat out off on in up it
is go do we us my he you how who what now get set art act map key no if or at by to this that
with from have will can are but only more time free""".split()

EN_FR = [
    ("the", "le"), ("and", "et"), ("of", "de"), ("for", "pour"), ("on", "sur"), ("in", "dans"),
    ("or", "ou"), ("who", "qui"), ("is", "est"), ("not", "pas"), ("all", "tout"),
    ("more", "plus"), ("he", "il"), ("my", "mon"), ("short", "court"), ("pink", "rose"),
    ("cat", "chat"), ("bread", "pain"), ("wine", "vin"), ("green", "vert"), ("sea", "mer"),
    ("day", "jour"), ("hand", "main"), ("bed", "lit"), ("good", "bon"), ("big", "grand"),
    ("no", "non"), ("one", "un"), ("coffee", "café"), ("office", "bureau"),
    ("thing", "chose"), ("end", "fin"), ("word", "mot"), ("name", "nom"), ("year", "an"),
    ("do", "faire"), ("say", "dire"), ("gold", "or"), ("iron", "fer"), ("bridge", "pont"),
    ("road", "route"),
]

SENTIMENT_LABEL_SETS = {
    "natural": ("positive", "negative"),
    "flipped": ("negative", "positive"),
    "arbitrary": ("foo", "bar"),
}


def _classified(pos: Sequence[str], neg: Sequence[str]) -> tuple[tuple[str, int], ...]:
    return tuple((w, 0) for w in pos) + tuple((w, 1) for w in neg)


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("sentiment", "sentiment of single words (positive / negative)",
                _classified(POSITIVE_WORDS, NEGATIVE_WORDS), ("positive", "negative"),
                SENTIMENT_LABEL_SETS),
        Dataset("sentiment-phrases", "sentiment of short phrases (positive / negative)",
                _classified(POSITIVE_PHRASES, NEGATIVE_PHRASES), ("positive", "negative"),
                SENTIMENT_LABEL_SETS),
        Dataset("capitals", "country -> capital city", tuple(CAPITALS), template=OPEN_TEMPLATE),
        Dataset("antonyms", "word -> its opposite", tuple(ANTONYMS), template=OPEN_TEMPLATE),
        Dataset("uppercase", "lowercase word -> the word in capitals",
                tuple((w, w.upper()) for w in UPPERCASE_WORDS), template=OPEN_TEMPLATE),
        Dataset("en-fr", "English word -> French word", tuple(EN_FR), template=OPEN_TEMPLATE),
    )
}

datasets: list[str] = list(DATASETS)
"""Names of the datasets, for the app and sweeps."""

LABEL_SETS: tuple[str, ...] = ("natural", "flipped", "arbitrary")


def names() -> list[str]:
    """Dataset names (what ``make_prompts``'s ``dataset`` accepts)."""
    return list(DATASETS)


def get_dataset(name: "str | Dataset") -> Dataset:
    """A built-in dataset, a suite task (``fv:NAME``), a task file (``file:PATH``) or a Dataset."""
    if isinstance(name, Dataset):
        return name
    if name.startswith("fv:"):

        return suite.get_dataset(name)
    if name.startswith("file:"):

        return taskfile.load(name[len("file:"):])
    if name not in DATASETS:
        raise TaskError(f"unknown language dataset {name!r}; use one of {', '.join(DATASETS)}, "
                        f"fv:NAME (the standard suite) or file:PATH (your own JSONL/CSV file)")
    return DATASETS[name]


def answer_table(tokenizer: Any, dataset: "str | Dataset", template: str | None = None) -> dict[str, int]:
    """``text.answer_counts`` of a dataset given by name (see there)."""
    return answer_counts(tokenizer, get_dataset(dataset), template)



def _tokenized_items(tokenizer: Any, ds: Dataset, tpl: Template, label_words: tuple[str, ...] | None,
                     multi_token: MultiToken) -> tuple[list[tuple[list[int], list[int], int]], list[int], int]:
    """Every usable item as (input ids, answer ids, class), the label ids of a label set, and how
    many items the multi-token rule dropped."""
    label_ids: list[int] = []
    if label_words is not None:
        if multi_token == "first":
            label_seqs = [_encode(tokenizer, tpl.y_space + w) for w in label_words]
            if any(not ids for ids in label_seqs):
                raise PromptError(f"label set {label_words} has a label that encodes to no tokens")
            label_ids = [ids[0] for ids in label_seqs]
        else:
            label_ids = [single_token_id(tokenizer, tpl.y_space + w, what=f"label of class {c}")
                         for c, w in enumerate(label_words)]
            label_seqs = [[i] for i in label_ids]
        if len(set(label_ids)) != len(label_ids):
            raise PromptError(
                f"label set {label_words} maps two classes to the same first token "
                f"{[tokenizer.decode([i]) for i in label_ids]}; labels must start with distinct "
                f"tokens: pick other label words")
        items = [(_encode(tokenizer, tpl.x_space + x), label_seqs[c], c) for x, c in ds.items]
        dropped = 0
    else:
        pairs = [(x, str(y)) for x, y in ds.items]
        answer_ids, _ = _answer_ids(tokenizer, tpl.y_space, pairs, multi_token, ds.name)
        items = [(_encode(tokenizer, tpl.x_space + x), ids, -1)
                 for (x, _), ids in zip(pairs, answer_ids) if ids is not None]
        dropped = len(pairs) - len(items)
    return items, label_ids, dropped


def _sample_rows(items: list[tuple[list[int], list[int], int]], k: int, n_prompts: int, seed: int,
                 label_words: tuple[str, ...] | None, pieces: tuple[list[int], list[int], list[int]],
                 bos_id: int | None, candidates: list[int] | None, pad_id: int) -> list[PromptBatch]:
    """``n_prompts`` one-row prompts: k demonstrations then a query, drawn from ``seed``."""
    prefix, middle, suffix = pieces
    rng = random.Random(seed)
    rows = []
    for _ in range(n_prompts):
        if label_words is not None:
            cls = rng.randrange(len(label_words))
            pool = [i for i, it in enumerate(items) if it[2] == cls]
            q = rng.choice(pool)
            demos = rng.sample([i for i in range(len(items)) if i != q], k)
        else:
            chosen = rng.sample(range(len(items)), k + 1)
            demos, q = chosen[:k], chosen[k]
        pb = PromptBuilder()
        if bos_id is not None:
            pb.add([bos_id])
        for i in demos:
            x_ids, y_ids, c = items[i]
            pb.add(prefix).demo(x_ids, middle, y_ids[0], cls=c).add(y_ids[1:]).add(suffix)
        x_ids, y_ids, c = items[q]
        pb.add(prefix).query(x_ids, middle)
        rows.append(pb.build(target=y_ids[0], candidates=candidates, query_class=c, pad_id=pad_id))
    return rows


def make_prompts(
    tokenizer: Any,
    dataset: "str | Dataset" = "sentiment",
    k: int | None = None,
    n_prompts: int | None = None,
    seed: int = 0,
    label_set: str | Sequence[str] = "natural",
    template: str | None = None,
    bos: bool | None = None,
    multi_token: MultiToken = "first",
) -> PromptBatch:
    """``n_prompts`` prompts of ``dataset`` with ``k`` demonstrations each (see the module doc).

    ``template``: default the dataset's own (``DATASETS[name].template``). ``label_set``:
    "natural", "flipped", "arbitrary" or a tuple of label words, one per class
    (classification datasets only). ``bos``: start with the tokenizer's BOS token (default: if it
    has one). ``multi_token``: the rule for answers of several tokens (module doc): "first"
    (default: score the first token, drop items whose first token another answer shares), "drop"
    (keep single-token answers only) or "error".
    Prefer ``experiments.tasks.task_batch("language:NAME", k, n_prompts, seed, tokenizer=...)``,
    the one task contract.
    """
    if k is None or n_prompts is None:
        raise TaskError("make_prompts needs k and n_prompts: make_prompts(tok, 'sentiment', 4, 40, 0)")
    if k < 0:
        raise TaskError(f"k (number of demonstrations) must be >= 0, got {k}")
    check_n_prompts(n_prompts, 32 * (k + 1), "language")
    if multi_token not in ("first", "drop", "error"):
        raise TaskError(f"multi_token must be 'first', 'drop' or 'error', got {multi_token!r}")
    ds = get_dataset(dataset if isinstance(dataset, Dataset) else str(dataset))
    template = ds.template if template is None else template
    tpl = Template.parse(template)
    label_words = _label_words(ds, label_set)
    if label_words is None and multi_token == "first":
        tpl = _space_rule(tokenizer, tpl, [str(y) for _, y in ds.items])

    # Tokenize every piece once.
    prefix, middle, suffix = (_encode(tokenizer, s) for s in (tpl.prefix, tpl.middle, tpl.suffix))
    if not middle:
        raise TaskError(f"the label prefix {tpl.middle!r} encodes to no tokens")
    items, label_ids, dropped = _tokenized_items(tokenizer, ds, tpl, label_words, multi_token)
    if len(items) < k + 1:
        raise PromptError(
            f"dataset {ds.name!r} has {len(items)} usable items under this tokenizer "
            f"({dropped} dropped by the multi_token={multi_token!r} rule) but k={k} needs {k + 1}; "
            f"use a smaller k or another multi_token rule"
        )
    bos_id = getattr(tokenizer, "bos_token_id", None)
    use_bos = (bos_id is not None) if bos is None else bos
    if use_bos and bos_id is None:
        raise TaskError("bos=True but this tokenizer has no BOS token")
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_id = int(pad_id if pad_id is not None else (getattr(tokenizer, "eos_token_id", None) or 0))

    candidates = None if label_words is None else label_ids
    rows = _sample_rows(items, k, n_prompts, seed, label_words, (prefix, middle, suffix),
                        bos_id if use_bos else None, candidates, pad_id)
    batch = PromptBatch.concat(rows)
    batch.meta = {
        "task": "language",
        "dataset": ds.name,
        "task_name": ds.name if ":" in ds.name else f"language:{ds.name}",
        "k": k,
        "seed": seed,
        "label_set": label_set if isinstance(label_set, str) else list(label_set),
        "label_words": None if label_words is None else list(label_words),
        "template": template,
        "bos": use_bos,
        "n_items": len(items),
        "dropped": dropped,
        "multi_token": multi_token,
        "answer_tokens": sorted({it[1][0] for it in items}),
        "chance": None if label_words is None else 1.0 / len(label_words),
    }
    return batch


def _label_words(ds: Dataset, label_set: str | Sequence[str]) -> tuple[str, ...] | None:
    """The label word of each class, or None for an open-vocabulary dataset."""
    if not ds.is_classification:
        if label_set != "natural":
            raise TaskError(
                f"dataset {ds.name!r} is open-vocabulary (its answers are the labels): only "
                f"label_set='natural' applies; label sets are for {classification_datasets()}"
            )
        return None
    assert ds.classes is not None
    if isinstance(label_set, str):
        if label_set not in ds.label_sets:
            raise TaskError(
                f"unknown label set {label_set!r} for {ds.name!r}; use one of "
                f"{', '.join(ds.label_sets)} or a tuple of {len(ds.classes)} label words"
            )
        words = tuple(ds.label_sets[label_set])
    else:
        words = tuple(label_set)
    if len(words) != len(ds.classes):
        raise TaskError(f"{ds.name!r} has {len(ds.classes)} classes {ds.classes}; got labels {words}")
    return words


def classification_datasets() -> list[str]:
    return [n for n, d in DATASETS.items() if d.is_classification]


def accuracy_table(model: Any, dataset: str, ks: Sequence[int], label_sets: Sequence[str] = ("natural",),
                   n_prompts: int = 40, seed: int = 0, batch_size: int = 20,
                   **options: Any) -> list[dict[str, Any]]:
    """Accuracy vs k (rows of dicts) of ``model`` on ``dataset``, one row per (label set, k).

    Scores with ``probes.readout.model_accuracy``: argmax over the candidates for classification
    datasets, top-1 over the vocabulary for open ones.
    """

    rows = []
    for ls in label_sets:
        for k in ks:
            batch = make_prompts(model.tokenizer, dataset, k, n_prompts, seed, label_set=ls, **options)
            acc = model_accuracy(model, batch, batch_size=batch_size)
            rows.append({"dataset": dataset, "label_set": ls, "k": k, "n_prompts": n_prompts,
                         "accuracy": acc, "chance": batch.meta["chance"]})
    return rows


__all__ = [
    "DATASETS", "DEFAULT_TEMPLATE", "Dataset", "LABEL_SETS", "Template", "accuracy_table", "answer_table",
    "classification_datasets", "datasets", "get_dataset", "make_prompts", "names",
]

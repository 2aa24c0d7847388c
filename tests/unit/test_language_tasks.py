"""Natural-language ICL tasks (experiments.tasks.language) under SmolLM2's tokenizer."""

from __future__ import annotations

import pytest
import torch

from experiments.tasks import TaskError
from experiments.tasks import language as L
from probes.prompt import PromptError


@pytest.fixture(scope="module")
def tok():
    from experiments.models.pretrained import load_tokenizer

    return load_tokenizer("smollm2-135m")


def _dec(tok, ids) -> str:
    return tok.decode([int(i) for i in ids])


@pytest.mark.parametrize("dataset", L.datasets)
@pytest.mark.parametrize("k", [0, 1, 4])
def test_roles_point_at_intended_tokens(tok, dataset, k):
    ds = L.get_dataset(dataset)
    batch = L.make_prompts(tok, dataset, k, 6, seed=k, template=L.DEFAULT_TEMPLATE)
    assert batch.batch_size == 6 and batch.n_demos == k
    assert batch.meta["dropped"] == 0  # every answer is one token under SmolLM2
    pairs = {(x, y) for x, y in ds.items}
    label_of = None
    if ds.is_classification:
        label_of = [" " + w for w in ds.label_sets["natural"]]
        assert [_dec(tok, [c]) for c in batch.candidates[0]] == label_of
    else:
        assert batch.candidates is None
    for b in range(batch.batch_size):
        row = batch.tokens[b]
        L_b = int(batch.lengths[b])
        assert row[0] == tok.bos_token_id
        for i in range(k):
            s, e = batch.demo_text[b, i].tolist()
            x = _dec(tok, row[s:e])
            f, lab = int(batch.forerunner[b, i]), int(batch.label[b, i])
            assert x.startswith(" ") and _dec(tok, row[s - 1 : s]) == ":"
            assert _dec(tok, row[f : f + 1]) == ":" and _dec(tok, row[f - 1 : f]) == "Label"
            assert lab == f + 1
            y = _dec(tok, row[lab : lab + 1])
            if ds.is_classification:
                c = int(batch.demo_class[b, i])
                assert (x[1:], c) in pairs and y == label_of[c]
            else:
                assert (x[1:], y[1:]) in pairs and int(batch.demo_class[b, i]) == -1
        s, e = batch.query_text[b].tolist()
        xq = _dec(tok, row[s:e])
        r = int(batch.readout[b])
        assert r == L_b - 1 == e + 2  # x_q, "\n", "Label", ":" = readout
        assert _dec(tok, row[r : r + 1]) == ":"
        target = _dec(tok, [batch.target[b]])
        if ds.is_classification:
            assert (xq[1:], int(batch.query_class[b])) in pairs
            assert target == label_of[int(batch.query_class[b])]
        else:
            assert (xq[1:], target[1:]) in pairs
        # The separately tokenized pieces equal the tokenization of the whole prompt text.
        text = _dec(tok, row[1:L_b])
        assert tok.encode(text, add_special_tokens=False) == row[1:L_b].tolist()


def test_query_not_among_its_demonstrations(tok):
    batch = L.make_prompts(tok, "capitals", 8, 10, seed=3)
    for b in range(10):
        s, e = batch.query_text[b].tolist()
        q = batch.tokens[b, s:e].tolist()
        demos = [batch.tokens[b, s_:e_].tolist() for s_, e_ in batch.demo_text[b].tolist()]
        assert q not in demos and len({tuple(d) for d in demos}) == 8


def test_flipped_label_set_swaps_labels(tok):
    nat = L.make_prompts(tok, "sentiment", 4, 12, seed=1)
    flip = L.make_prompts(tok, "sentiment", 4, 12, seed=1, label_set="flipped")
    pos, neg = tok.encode(" positive")[0], tok.encode(" negative")[0]
    swap = {pos: neg, neg: pos}
    assert torch.equal(nat.demo_class, flip.demo_class)
    assert torch.equal(nat.label, flip.label)
    assert flip.label_tokens.tolist() == [[swap[t] for t in row] for row in nat.label_tokens.tolist()]
    assert flip.target.tolist() == [swap[t] for t in nat.target.tolist()]
    # Everything but the label tokens is unchanged.
    lab_mask = nat.role_mask("label")
    assert torch.equal(nat.tokens[~lab_mask], flip.tokens[~lab_mask])
    assert not torch.equal(nat.tokens, flip.tokens)


def test_arbitrary_labels_are_foo_bar(tok):
    batch = L.make_prompts(tok, "sentiment-phrases", 4, 8, seed=0, label_set="arbitrary")
    words = [[_dec(tok, [t]) for t in row] for row in batch.label_tokens.tolist()]
    for row, classes in zip(words, batch.demo_class.tolist()):
        assert row == [(" foo", " bar")[c] for c in classes]
    assert {_dec(tok, [t]) for t in batch.candidates[0]} == {" foo", " bar"}
    assert batch.meta["chance"] == 0.5


def test_multi_token_label_is_a_prompt_error(tok):
    """Labels are scored by their first token: two labels starting alike are refused; under the
    single-token rule ("drop") a label of two tokens is refused."""
    with pytest.raises(PromptError, match="same first token"):
        L.make_prompts(tok, "sentiment", 2, 4, seed=0, label_set=("so good", "so bad"))
    with pytest.raises(PromptError, match="single tokens"):
        L.make_prompts(tok, "sentiment", 2, 4, seed=0, label_set=("so good", "bad"), multi_token="drop")
    b = L.make_prompts(tok, "sentiment", 2, 4, seed=0, label_set=("so good", "bad"))
    assert [_dec(tok, [c]) for c in b.candidates[0]] == [" so", " bad"]


def test_multi_token_answers_dropped_or_rejected():
    """Under a tokenizer that splits every capital, "drop" leaves too few items; "error" names it."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.train_from_iterator(["Word: cat\nLabel: dog\n"] * 3, trainers.BpeTrainer(
        vocab_size=280, special_tokens=["<unk>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    small = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>")
    with pytest.raises(PromptError, match="0 usable items"):
        L.make_prompts(small, "capitals", 1, 2, seed=0, multi_token="drop")
    with pytest.raises(PromptError, match="capitals answer ' Paris'|capitals answer"):
        L.make_prompts(small, "capitals", 1, 2, seed=0, multi_token="error")


def test_first_token_rule_on_multi_token_answers(tok):
    """fv:english-french under SmolLM2: most answers are several tokens. An item is kept exactly
    when no other answer starts with the same token; demonstrations show the whole answer."""
    from experiments.tasks import suite

    ds = suite.get_dataset("fv:english-french")
    owners: dict[int, set[str]] = {}
    for _, y in ds.items:
        owners.setdefault(tok.encode(" " + y, add_special_tokens=False)[0], set()).add(y)
    expect = sum(1 for _, y in ds.items if len(owners[tok.encode(" " + y, add_special_tokens=False)[0]]) == 1)
    table = L.answer_table(tok, ds)
    assert table["kept_first"] == expect and 0 < expect < table["n_items"]
    assert table["kept_first"] + table["ambiguous_first"] == table["n_items"]
    assert table["multi_token"] > table["single_token"]  # the rule matters here
    batch = L.make_prompts(tok, "fv:english-french", 3, 6, seed=1)
    assert batch.meta["n_items"] == expect and batch.meta["dropped"] == table["n_items"] - expect
    answers = {y for _, y in ds.items}
    for b in range(batch.batch_size):
        for i in range(3):
            lab = int(batch.label[b, i])
            end = lab
            while _dec(tok, [batch.tokens[b, end + 1]]) != "\n":
                end += 1
            shown = _dec(tok, batch.tokens[b, lab:end + 1])
            assert shown.startswith(" ") and shown[1:] in answers
            assert tok.encode(shown, add_special_tokens=False)[0] == int(batch.tokens[b, lab])
        assert int(batch.target[b]) in batch.meta["answer_tokens"]


def test_same_seed_same_prompts_and_registry_form(tok):
    from experiments.tasks import task_batch

    a = L.make_prompts(tok, "antonyms", 3, 5, 7)
    b = task_batch("language:antonyms", 3, 5, 7, tokenizer=tok)  # the one task contract
    c = L.make_prompts(tok, "antonyms", 3, 5, 8)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.target, b.target)
    assert not torch.equal(a.tokens[:, : c.seq_len], c.tokens[:, : a.seq_len])


def test_custom_template_positions(tok):
    batch = L.make_prompts(tok, "capitals", 2, 3, seed=0, template="Q: {x}\nA: {y}\n\n", bos=False)
    assert batch.meta["bos"] is False
    for b in range(3):
        row = batch.tokens[b]
        assert _dec(tok, row[:2]) == "Q:"  # no BOS
        for f in batch.forerunner[b].tolist() + [int(batch.readout[b])]:
            assert _dec(tok, row[f - 1 : f + 1]) == "A:"
        s, _ = batch.demo_text[b, 1].tolist()
        assert _dec(tok, row[s - 2 : s]) == "Q:"
        assert _dec(tok, row[int(batch.label[b, 0]) + 1 : s - 2]) == "\n\n"


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(dataset="nope"), TaskError, "sentiment"),
    (dict(dataset="capitals", label_set="flipped"), TaskError, "open-vocabulary"),
    (dict(dataset="sentiment", label_set="weird"), TaskError, "natural"),
    (dict(dataset="sentiment", template="Word: {x}\n"), TaskError, "{y}"),
    (dict(dataset="sentiment", template="{x}{y}"), TaskError, "between"),
    (dict(dataset="sentiment", label_set=("good", "good")), PromptError, "same first token"),
    (dict(dataset="en-fr", k=60), PromptError, "smaller k"),
])
def test_bad_options_have_clear_errors(tok, kwargs, exc, words):
    args = dict(k=2, n_prompts=2, seed=0) | kwargs
    with pytest.raises(exc, match=None) as err:
        L.make_prompts(tok, **args)
    assert words in str(err.value)


def test_registry_lists_datasets():
    assert L.datasets == L.names() == list(L.DATASETS)
    assert {"sentiment", "sentiment-phrases", "capitals", "antonyms", "uppercase", "en-fr"} <= set(L.datasets)
    assert L.classification_datasets() == ["sentiment", "sentiment-phrases"]
    sizes = {n: len(d.items) for n, d in L.DATASETS.items()}
    assert sizes["capitals"] >= 40
    counts = [sum(1 for _, c in L.DATASETS["sentiment"].items if c == cls) for cls in (0, 1)]
    assert min(counts) >= 40


@pytest.mark.parametrize("dataset", ["capitals", "antonyms", "uppercase", "en-fr"])
def test_open_datasets_default_to_x_colon_y(tok, dataset):
    batch = L.make_prompts(tok, dataset, 2, 4, seed=0)
    assert batch.meta["template"] == L.OPEN_TEMPLATE
    pairs = set(L.get_dataset(dataset).items)
    for b in range(4):
        row = batch.tokens[b]
        for i in range(2):
            s, e = batch.demo_text[b, i].tolist()
            f, lab = int(batch.forerunner[b, i]), int(batch.label[b, i])
            assert f == e and lab == f + 1 and _dec(tok, row[f : f + 1]) == ":"
            assert (_dec(tok, row[s:e]).strip(), _dec(tok, row[lab : lab + 1])[1:]) in pairs
        s, e = batch.query_text[b].tolist()
        assert int(batch.readout[b]) == e
        assert (_dec(tok, row[s:e]).strip(), _dec(tok, [batch.target[b]])[1:]) in pairs

"""The task registry: names, lazy lookup, errors."""

import pytest

from experiments import tasks


def test_registry_lists_every_task():
    assert set(tasks.names()) == {"induction", "icll", "classify", "linreg", "language", "kv-recall"}
    for name in tasks.TOKEN_TASKS:
        mod = tasks.get_task(name)
        assert callable(mod.make_prompts) and mod.VOCAB_SIZE > 0


@pytest.mark.parametrize("name", ["induction", "icll", "classify", "kv-recall"])
def test_uniform_entry_point_builds_k_demonstrations(name):
    b = tasks.task_batch(name, 2, 3, 0)
    assert b.batch_size == 3 and b.n_demos == 2 and b.meta["task"] == name
    assert (b.target >= 0).all()
    assert int(b.tokens.max()) < tasks.get_task(name).VOCAB_SIZE


def test_unknown_task_and_language_without_tokenizer_are_refused():
    with pytest.raises(tasks.TaskError, match="registered tasks"):
        tasks.get_task("sentiment")
    with pytest.raises(tasks.TaskError, match="needs a dataset"):
        tasks.task_batch("language", 1, 1, 0)
    with pytest.raises(tasks.TaskError, match="tokenizer"):
        tasks.task_batch("language:sentiment", 1, 1, 0)


def test_kv_recall_is_a_registered_task_whose_answer_is_the_repeated_keys_value():
    b = tasks.task_batch("kv-recall", 4, 6, 3, vocab=40)
    assert int(b.tokens.max()) < 40 and b.meta["vocab"] == 40
    for r in range(b.batch_size):
        j = int(b.query_class[r])
        key = int(b.tokens[r, b.demo_text[r, j, 0]])
        assert int(b.tokens[r, b.query_text[r, 0]]) == key  # the query repeats demonstration j's key
        assert int(b.target[r]) == int(b.tokens[r, b.label[r, j]])  # and its answer is that value
    with pytest.raises(tasks.TaskError, match="needs 15 distinct tokens"):
        tasks.task_batch("kv-recall", 5, 1, 0, vocab=14)

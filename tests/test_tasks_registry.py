"""The task registry: names, lazy lookup, errors."""

import pytest

from experiments import tasks


def test_registry_lists_every_task():
    assert set(tasks.names()) == {"induction", "icll", "classify", "linreg", "language"}
    for name in tasks.TOKEN_TASKS:
        mod = tasks.get_task(name)
        assert callable(mod.make_prompts) and mod.VOCAB_SIZE > 0


@pytest.mark.parametrize("name", ["induction", "icll", "classify"])
def test_uniform_entry_point_builds_k_demonstrations(name):
    b = tasks.make_prompts(name, 2, 3, 0)
    assert b.batch_size == 3 and b.n_demos == 2 and b.meta["task"] == name
    assert (b.target >= 0).all()
    assert int(b.tokens.max()) < tasks.get_task(name).VOCAB_SIZE


def test_unknown_task_and_language_without_tokenizer_are_refused():
    with pytest.raises(tasks.TaskError, match="registered tasks"):
        tasks.get_task("sentiment")
    with pytest.raises(tasks.TaskError, match="tokenizer"):
        tasks.make_prompts("language", 1, 1, 0)

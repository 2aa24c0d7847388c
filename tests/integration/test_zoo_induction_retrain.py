"""A reduced-step retrain of induction-2l from its seed still forms an induction head in layer 1."""

import pytest

from experiments.models import zoo
from probes.heads import induction_scores, previous_token_scores, repeated_random_tokens


@pytest.mark.slow
def test_short_retrain_of_induction_2l_forms_a_layer1_induction_head():
    result = zoo.get_spec("induction-2l").train(seed=0, steps=1000, progress=False)
    model = result.model
    ind = induction_scores(model, seg_len=20, batch=16, seed=99).scores
    assert ind.shape == (2, 4)
    assert float(ind[1].max()) > 0.5
    assert float(ind[1].max()) > float(ind[0].max()) + 0.3  # the head is in layer 1, not layer 0
    prev = previous_token_scores(model, repeated_random_tokens(8, 20, 256, seed=98)).scores
    assert float(prev[0].max()) > 0.5  # its previous-token partner in layer 0

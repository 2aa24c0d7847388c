"""Activation vs attribution patching: exact on a model linear in the patched activation."""

import torch

from circuits import patching as P
from circuits import toy
from circuits.sweeps import readout_forward
from tests.helpers import tiny_bridge
from tests.unit.test_interventions import _random_batch, _same_layout_source


def _linear_model():
    """1 layer, attention only, no layer norm: logits are linear in every head's z."""
    from experiments.models.zoo import build_model

    m = build_model("bridge-native", dict(d_model=32, n_layers=1, n_heads=4, d_head=8, n_ctx=64, d_vocab=50,
                                          attn_only=True, act_fn="gelu", normalization_type=None, seed=1))
    m.eval()
    return m


def test_attribution_equals_activation_patching_on_linear_model():
    model = _linear_model()
    tgt = _random_batch().trim()
    src = _same_layout_source(tgt)
    for mode, roles in (("patch", ()), ("patch", ("readout",)), ("zero", ()), ("mean", ("label", "readout"))):
        act = P.activation_patching(model, tgt, P.logit_diff, source=src, mode=mode, roles=roles)
        attr = P.attribution_patching(model, tgt, P.logit_diff, source=src, mode=mode, roles=roles)
        assert act.abs().max() > 1e-4, "the patch must do something for the test to mean anything"
        torch.testing.assert_close(attr, act, atol=1e-5, rtol=1e-4)


def test_attribution_is_only_approximate_when_nonlinear():
    """With layer norm and a log-softmax metric the first-order estimate differs, but correlates."""
    model = tiny_bridge(attn_only=False)
    model.eval()
    tgt = _random_batch(n=8).trim()
    act = P.activation_patching(model, tgt, P.target_logprob, mode="zero")
    attr = P.attribution_patching(model, tgt, P.target_logprob, mode="zero")
    assert not torch.allclose(act, attr, atol=1e-7)
    assert torch.corrcoef(torch.stack([act.flatten(), attr.flatten()]))[0, 1] > 0.5


def test_zero_head_has_zero_effect_and_copy_head_has_all():
    model, batch = toy.label_copy_model(), toy.label_copy_batch(8, 3)
    act = P.activation_patching(model, batch, P.logit_diff, mode="zero")
    base = P.logit_diff(readout_forward(model, batch.tokens, batch.readout), batch)
    assert act[0, 1] == 0.0
    torch.testing.assert_close(act[0, 0], -base)  # zeroing the copy head removes the whole logit diff

"""The pretrained path of load_model: a local Hugging Face checkpoint, and SmolLM2-135M offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from experiments.models.loading import load_model

SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "the capital of france is paris",
    "good words are positive and bad words are negative",
    "in context learning with induction heads",
]


def write_tiny_gpt2(path: Path, seed: int = 0) -> Path:
    """A random 2-layer GPT-2 (n_embd 32, 2 heads) and a BPE tokenizer trained here, saved to ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(SENTENCES, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>",
                                  eos_token="<|endoftext|>", unk_token="<unk>")
    # A large init scale so that the logits are far from zero and a mismatch would show.
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     initializer_range=0.3)
    torch.manual_seed(seed)
    GPT2LMHeadModel(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return write_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="module")
def tiny_loaded(tiny_dir):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    from transformers import AutoModelForCausalLM

    bridge = load_model(str(tiny_dir))
    hf = AutoModelForCausalLM.from_pretrained(tiny_dir, attn_implementation="eager").eval()
    return bridge, hf


def test_local_checkpoint_logits_match_hf(tiny_loaded):
    from transformer_lens.model_bridge import TransformerBridge

    bridge, hf = tiny_loaded
    assert isinstance(bridge, TransformerBridge)
    assert (bridge.cfg.n_layers, bridge.cfg.n_heads, bridge.cfg.d_model) == (2, 2, 32)
    ids = torch.tensor([bridge.tokenizer.encode("the cat sat in the park on a mat")])
    with torch.no_grad():
        ours, theirs = bridge(ids), hf(ids).logits
    assert theirs.std() > 0.1  # a real test: logits far from constant
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_local_checkpoint_keeps_its_tokenizer(tiny_loaded, tiny_dir):
    from transformers import AutoTokenizer

    bridge, _ = tiny_loaded
    ref = AutoTokenizer.from_pretrained(tiny_dir)
    text = "the capital of france is paris"
    assert bridge.tokenizer.encode(text, add_special_tokens=False) == ref.encode(
        text, add_special_tokens=False)
    assert bridge.cfg.d_vocab == len(ref)


def test_local_checkpoint_hooks_see_attention(tiny_loaded):
    bridge, _ = tiny_loaded
    ids = torch.tensor([bridge.tokenizer.encode("a dog ran in the park")])
    _, cache = bridge.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_pattern"))
    pat = cache["blocks.1.attn.hook_pattern"]
    assert pat.shape == (1, 2, ids.shape[1], ids.shape[1])
    torch.testing.assert_close(pat.sum(-1), torch.ones(pat.shape[:-1]))
    assert torch.triu(pat[0, 0], diagonal=1).abs().max() == 0  # causal


# ---------------------------------------------------------------------- SmolLM2-135M (slow)
@pytest.fixture(scope="module")
def smollm():
    return load_model("smollm2-135m")


@pytest.mark.slow
def test_smollm_card_says_quantized(smollm):
    card = smollm.card
    assert card["hub_name"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (smollm.cfg.n_layers, smollm.cfg.n_heads, smollm.cfg.d_model) == (30, 9, 576)
    if card["source"] == "gguf":
        assert "4-bit quantization" in card["quantization"]
        path = Path(card["path"])
        assert (path / "model.safetensors").exists() and (path / "config.json").exists()
        assert json.loads((path / "card.json").read_text())["gguf_sha256"] == card["gguf_sha256"]
        assert not list(path.parent.glob(f".{path.name}.tmp-*"))  # no half-written cache left


@pytest.mark.slow
def test_smollm_logits_match_hf(smollm):
    from transformers import AutoModelForCausalLM

    source = smollm.card.get("path", smollm.card["hub_name"])
    hf = AutoModelForCausalLM.from_pretrained(source, attn_implementation="eager").eval()
    ids = torch.tensor([smollm.tokenizer.encode("The capital of France is", add_special_tokens=False)])
    with torch.no_grad():
        ours, theirs = smollm(ids), hf(ids).logits
    assert theirs.std() > 1.0
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_smollm_knows_paris(smollm):
    from experiments.models.pretrained import greedy_complete

    assert greedy_complete(smollm, "The capital of France is", max_new_tokens=1) == " Paris"


@pytest.mark.slow
def test_smollm_has_induction_head_L18H6(smollm):
    from probes.heads import induction_scores

    # Token ids below 5000 (common words, not special/rare ids; the few ids 0..16 are specials).
    scores = induction_scores(smollm, seg_len=25, batch=4, seed=0, vocab=5000,
                              bos=smollm.tokenizer.bos_token_id)
    layer, head, best = scores.top(1)[0]
    assert (layer, head) == (18, 6)
    assert best > 0.8
    assert float(scores.scores[:10].max()) < 0.5  # early layers have no induction heads


def test_first_loads_at_once_build_the_gguf_cache_once(tmp_path, monkeypatch):
    """A process that finds the cache missing waits for one that is building it and then uses its
    copy: it must not touch the GGUF file (gemma's is removed by the builder when it finishes)."""
    import threading

    from experiments.models import pretrained as P

    out = tmp_path / "gemma3-270m"
    monkeypatch.setattr(P, "gguf_path", lambda name: pytest.fail("the waiting load rebuilt the cache"))
    result: list = []
    with P._build_lock(out):  # "another process" is building
        t = threading.Thread(target=lambda: result.append(P.dequantize_gguf(out, name="gemma3-270m")))
        t.start()
        t.join(0.5)
        assert t.is_alive(), "dequantize_gguf did not wait for the build in progress"
        out.mkdir()
        for f in ("config.json", "model.safetensors"):
            (out / f).write_text("{}")
        (out / "card.json").write_text(json.dumps({"cache_format": P.CACHE_FORMAT}))
    t.join(10)
    assert result == [(out, None, None)]


def _readme_python_blocks() -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]


@pytest.mark.slow
def test_the_readmes_examples_run(smollm):
    """The README's Python examples, as printed: the model-loading block (the offline lines; the
    placeholder folder and the hub name cannot load here), then the prompts block on SmolLM2."""
    blocks = _readme_python_blocks()
    loading = next(b for b in blocks if "load_model(" in b)
    offline = [ln for ln in loading.splitlines()
               if "path/to" not in ln and '"gpt2"' not in ln and "gemma3-270m" not in ln]
    ns: dict = {}
    exec("\n".join(offline), ns)  # noqa: S102 (the README's own code)
    assert ns["model"].cfg.n_layers == 30  # the last offline line loads smollm2-135m
    prompts = next(b for b in blocks if "task_batch(" in b)
    ns = {"model": smollm}
    exec(prompts, ns)  # noqa: S102
    batch, zs, shuffled = ns["batch"], ns["zs"], ns["shuffled"]
    assert len(batch) == 40 and int(batch.demo_mask.sum(1).min()) == 4
    assert zs.n_demos == 0 and torch.equal(zs.target, batch.target)
    assert (zs.lengths < batch.lengths).all()
    changed = shuffled.tokens != batch.tokens
    label_pos = torch.zeros_like(changed)
    for b in range(len(batch)):
        label_pos[b, batch.label[b][batch.demo_mask[b]]] = True
    assert changed.any() and not (changed & ~label_pos).any()  # only label tokens move

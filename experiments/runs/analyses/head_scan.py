"""The ``head_scan`` analysis: every head score of ``experiments.studies.scan.head_scan`` with its
statistics, per-prompt induction scores and attention maps."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from experiments.runs.inputs import call_accepted, get_model, is_token_model, with_precision
from experiments.runs.modelinfo import n_ctx
from experiments.runs.registry import AnalysisResult, AnalysisSpec, register
from experiments.studies.scan import head_scan, max_seg_len, scan_stats
from probes.heads import attention_patterns, repeated_random_tokens


def _head_scan(model_name: str, task: str, k: int, seed: int, params: dict[str, Any]) -> AnalysisResult:
    model = get_model(model_name, params["precision"])
    kwargs: dict[str, Any] = {"seed": seed}
    if params.get("seg_len"):
        kwargs["seg_len"] = params["seg_len"]
    for key in ("n_prompts", "batch"):
        if params.get("n_prompts"):
            kwargs[key] = params["n_prompts"]
    with torch.no_grad():
        scan = call_accepted(head_scan, model=model, **kwargs)
    tensors = {}
    example = None
    for score_name, hs in scan.items():
        scores = hs.scores.detach().float().cpu()
        tensors[f"scores/{score_name}"] = scores.contiguous()
        if hs.per_prompt is not None:  # [prompt, layer, head]: small, kept for re-analysis
            tensors[f"per_prompt/{score_name}"] = hs.per_prompt.float().contiguous()
        if hs.null is not None:
            tensors[f"null_per_prompt/{score_name}"] = hs.null.per_prompt.float().contiguous()
        if example is None and getattr(hs, "tokens", None) is not None and hs.tokens.ndim == 2:
            example = hs.tokens[:1]
    per_prompt: list[dict[str, Any]] = []
    if params["induction_prompts"] and "induction" in scan:
        per_prompt = _induction_per_prompt(model, scan["induction"], params["induction_prompts"], seed,
                                      int(scan["induction"].info.get("seg_len", 20)))
    if example is not None and params.get("save_attention", True):
        with torch.no_grad():
            pat = attention_patterns(model, example)  # [L, 1, H, q, k]
        tensors["attention/example0"] = pat[:, 0].float().contiguous()
        tensors["attention/example0_tokens"] = example[0].contiguous()
    table = scan_stats(scan).assign(prompt=-1)  # per-head interval, null, p, q, verdict
    if per_prompt:
        table = pd.concat([table, pd.DataFrame(per_prompt)], ignore_index=True)
    return with_precision(AnalysisResult(table, tensors), params["precision"])


def _induction_per_prompt(model: Any, scores: Any, n: int, seed: int, seg_len: int,
                          top: int = 5) -> list[dict[str, Any]]:
    """Per-prompt induction scores of the ``top`` heads of the scan, on fresh repeated random
    sequences (metric ``induction:prompt``) and on a null where the second half is a new random
    segment, so the induction target carries no signal (``induction_null:prompt``). One row per
    (prompt, head): what ``probes.stats.unpaired`` needs for an interval and a test."""


    vocab = int(model.cfg.d_vocab)
    toks = repeated_random_tokens(n, seg_len, vocab, seed=seed + 7001)
    null = toks.clone()
    null[:, seg_len:] = torch.randint(0, vocab, (n, seg_len), generator=torch.Generator().manual_seed(seed + 7002))
    T = toks.shape[1]
    mask = torch.zeros(T, T)
    q = torch.arange(seg_len, 2 * seg_len)
    mask[q, q - seg_len + 1] = 1.0
    heads = [(l, h) for l, h, _ in scores.top(top)]
    rows: list[dict[str, Any]] = []
    for metric, t in (("induction:prompt", toks), ("induction_null:prompt", null)):
        with torch.no_grad():
            _, cache = model.run_with_cache(t, names_filter=lambda name: name.endswith("hook_pattern"))
        for l, h in heads:
            pat = cache[f"blocks.{l}.attn.hook_pattern"][:, h].float()  # [b, q, k]
            per = (pat * mask).sum((-1, -2)) / len(q)
            rows += [{"metric": metric, "layer": l, "head": h, "prompt": b, "value": float(per[b])}
                     for b in range(n)]
    return rows


def _check_head_scan(model: str, task: str, k: int, params: dict[str, Any]) -> str | None:
    seg = params["seg_len"]
    ctx = n_ctx(model)
    if seg < 0 or (seg and ctx is not None and seg > max_seg_len(ctx)):
        top = f"1..{max_seg_len(ctx)}" if ctx is not None else ">= 1"
        return f"seg_len={seg}: the scan repeats a segment twice in the model's context; use {top}, or 0 for the default"
    if params["n_prompts"] < 0:
        return f"n_prompts={params['n_prompts']}: use n_prompts >= 1, or 0 for the default"
    return None


register(AnalysisSpec(
    name="head_scan", fn=_head_scan,
    params={"seg_len": 0, "n_prompts": 0, "save_attention": True, "induction_prompts": 32,
            "precision": "float32"},
    uses_task=False, uses_k=False,
    description="layer x head scores (previous-token, induction, ...) from experiments.studies.scan.head_scan, each "
                "with its interval over prompts and its test against a null (experiments.studies.scan.scan_stats)",
    requires=("experiments.studies.scan",),
    code=("experiments.runs.analyses.head_scan", "experiments.runs.inputs", "probes.head_weights"),
    version=2,
    applies=lambda m, t: None if is_token_model(m) else "it reads vectors, not tokens (no head scan)",
    check_params=_check_head_scan,
))

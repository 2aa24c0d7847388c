"""Peak memory of role-filtered capture versus TransformerLens's full ``run_with_cache``.

Set-up: a GPT-2-small-sized TransformerBridge with random weights (d_model 768, 12 layers,
12 heads, d_mlp 3072, d_vocab 50257, n_ctx 1024), and a batch of 32-shot prompts of several
hundred tokens built with ``PromptBuilder`` (random token ids; each demonstration is x_i, a
two-token forerunner "label:" and a label, separated by a newline token).

Captured: the attention-pattern rows from the read-out and every forerunner position, in every
layer and head (``capture(model, batch, "attention patterns", roles=["readout", "forerunner"])``).
Baseline: ``model.run_with_cache(batch.tokens)`` (every hook) on all prompts in one forward.
Both run under ``torch.no_grad``.

Two capture figures are printed:

- ``capture_memory_ratio``: capture with its mini-batching (``--capture-batch``, default 1
  prompt per forward) over the same prompts, versus one ``run_with_cache`` over all of them.
  This is how capture is used over many prompts: its peak is one mini-batch's forward plus the
  gathered rows, while a full cache grows with every prompt.
- ``capture_memory_ratio_same_batch``: capture on the very same single forward as the
  baseline. Its floor is set by the model, not by capture: the native attention itself
  materialises about three ``[batch, heads, pos, pos]`` tensors in the layer being computed,
  while the full cache holds two per layer for all 12 layers plus every other activation and
  the logits, so no hook-based capture can go much below ~0.08 on one shared forward.

How memory is measured (CPU, honest about torch): every measurement runs in a fresh subprocess.
The child builds the model and prompts, runs one short warm-up forward (lazy buffers), then
resets the kernel's resident-set high-water mark by writing ``5`` to ``/proc/self/clear_refs``
and records ``VmRSS``. After the measured call it reads ``VmHWM`` (peak resident set) and reports
``VmHWM - VmRSS(before)``: the extra memory the call needed at its peak, including transient
activations, autograd-free intermediates, the cache or capture itself and the logits. Where
``clear_refs`` is not writable it falls back to ``ru_maxrss`` deltas (which can only
under-report the call's peak if model construction peaked higher; the script says which method
it used). tracemalloc is not used: it does not see torch's allocations.

The ratio is capture peak / run_with_cache peak. ``values_equal`` compares every captured row
bit for bit with the same entries of the full cache, in one process.

Run: ``python bench/capture_memory.py [--prompts 2] [--shots 32]``. Figures are printed last.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys

CONFIG = dict(d_model=768, n_layers=12, n_heads=12, d_head=64, d_mlp=3072, n_ctx=1024,
              d_vocab=50257, act_fn="gelu", normalization_type="LN",
              positional_embedding_type="standard", attn_only=False, seed=0)
ROLES = ["readout", "forerunner"]


def build_prompts(n_prompts: int, shots: int, seed: int = 0):
    import torch

    from probes.prompt import PromptBatch, PromptBuilder

    g = torch.Generator().manual_seed(seed)
    BOS, NL, LABEL, COLON = 50256, 198, 18242, 25  # "<|endoftext|>", "\n", "label", ":"
    label_ids = [3967, 4633]
    rows = []
    for _ in range(n_prompts):
        pb = PromptBuilder().add([BOS])
        for _ in range(shots):
            n = int(torch.randint(8, 14, (1,), generator=g))
            text = torch.randint(1000, 40000, (n,), generator=g).tolist()
            pb.demo(text, [LABEL, COLON], label_ids[int(torch.randint(0, 2, (1,), generator=g))])
            pb.add([NL])
        pb.query(torch.randint(1000, 40000, (10,), generator=g).tolist(), [LABEL, COLON])
        rows.append(pb.build(candidates=label_ids))
    return PromptBatch.concat(rows)


def _rss_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _reset_peak() -> str:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "VmHWM"
    except OSError:
        return "ru_maxrss"


def child(mode: str, n_prompts: int, shots: int, capture_batch: int) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    from experiments.models.zoo import build_model
    from probes.capture import capture

    model = build_model("bridge-native", CONFIG)
    model.eval()
    batch = build_prompts(n_prompts, shots)
    with torch.no_grad():
        model(batch.tokens[:, :8])  # warm-up: lazy buffers, allocator arenas
    gc.collect()

    method = _reset_peak()
    before = _rss_kb("VmRSS") if method == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad():
        if mode == "capture":
            result = capture(model, batch, "attention patterns", roles=ROLES,
                             batch_size=capture_batch, progress=False)
        else:
            result = model.run_with_cache(batch.tokens)
    peak = _rss_kb("VmHWM") if method == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"mode": mode, "peak_kb": peak - before, "method": method,
           "seq_len": batch.seq_len, "n_prompts": n_prompts,
           "lengths": batch.lengths.tolist()}
    if mode == "capture":
        out["captured_bytes"] = result.nbytes()
    else:
        _, cache = result
        out["cache_bytes"] = sum(t.numel() * t.element_size() for t in cache.values()
                                 if isinstance(t, torch.Tensor))
        del result
        # bit-for-bit check of every captured row against the full cache (same batch, same run)
        cap = capture(model, batch, "attention patterns", roles=ROLES,
                      batch_size=capture_batch, progress=False)
        equal = True
        for key, val in cap.data.items():
            full = cache[f"blocks.{key.layer}.attn.hook_pattern"][:, key.head]  # [b, q, k]
            idx, valid = cap.positions[key.role], cap.valid[key.role]
            ref = full.gather(1, idx[:, :, None].expand(-1, -1, full.shape[-1]))
            equal &= bool(torch.equal(val[valid], ref[valid]))
        out["values_equal"] = equal
        out["n_keys"] = len(cap.data)
    return out


def run_child(mode: str, args: argparse.Namespace, capture_batch: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--prompts", str(args.prompts),
           "--shots", str(args.shots), "--capture-batch", str(capture_batch)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if res.returncode != 0:
        raise SystemExit(f"child {mode} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--shots", type=int, default=32)
    ap.add_argument("--capture-batch", type=int, default=1)
    ap.add_argument("--child", choices=["capture", "full"])
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.prompts, args.shots, args.capture_batch)))
        return
    cap = run_child("capture", args, args.capture_batch)
    same = run_child("capture", args, args.prompts)
    full = run_child("full", args, args.capture_batch)
    print(f"prompts: {cap['n_prompts']} x {args.shots}-shot, lengths {cap['lengths']} "
          f"(padded width {cap['seq_len']})")
    print(f"method: peak resident-set delta per subprocess ({cap['method']}, "
          f"MALLOC_MMAP_THRESHOLD_=65536); run_with_cache and the same-batch capture run all "
          f"{args.prompts} prompts in one forward, the capture ratio uses batch_size="
          f"{args.capture_batch}; full-cache tensor bytes count aliased hooks twice")
    print(f"captured_mb: {cap['captured_bytes'] / 2**20:.2f}")
    print(f"full_cache_tensor_mb: {full['cache_bytes'] / 2**20:.1f}")
    print(f"run_with_cache_peak_mb: {full['peak_kb'] / 1024:.1f}")
    print(f"capture_peak_mb_same_batch: {same['peak_kb'] / 1024:.1f}")
    print(f"capture_peak_mb: {cap['peak_kb'] / 1024:.1f}")
    print(f"capture_memory_ratio_same_batch: {same['peak_kb'] / full['peak_kb']:.4f}")
    print(f"capture_memory_ratio: {cap['peak_kb'] / full['peak_kb']:.4f}")
    print(f"values_equal: {str(full['values_equal']).lower()}")

if __name__ == "__main__":
    main()

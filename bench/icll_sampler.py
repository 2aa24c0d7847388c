"""Batched ``icll.sample_sequences`` vs the loop definition ``icll.sample_sequences_loop``.

Times a training batch (32 rows, default lengths) both ways, with the DFAs given (the walks and
ground truth only) and with the DFAs drawn (what a training step pays), and one icll-dfa training
step (forward + backward + AdamW) for scale.

    python bench/icll_sampler.py [--reps 10]

Prints, last, one per line: sampler_speedup_given_dfas, sampler_speedup_with_dfas,
batched_sampler_share_of_step, loop_sampler_share_of_step.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from experiments.tasks import dfa, icll


def timed(fn, reps: int) -> float:
    fn(0)
    t = time.perf_counter()
    for i in range(reps):
        fn(i + 1)
    return (time.perf_counter() - t) / reps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    dfa.heldout_hashes()
    dfas = [dfa.train_dfa(random.Random(i)) for i in range(32)]
    fast_g = timed(lambda i: icll.sample_sequences(32, seed=i, dfas=dfas), args.reps)
    slow_g = timed(lambda i: icll.sample_sequences_loop(32, seed=i, dfas=dfas), args.reps)
    fast = timed(lambda i: icll.sample_sequences(32, seed=i), args.reps)
    slow = timed(lambda i: icll.sample_sequences_loop(32, seed=i), args.reps)

    from experiments.models.zoo import build_model, icll_dfa

    model = build_model("bridge-native", icll_dfa.CONFIG)
    opt = torch.optim.AdamW(model.parameters())
    seqs = icll.sample_sequences(32, seed=0)

    def step(_: int) -> None:
        loss = icll_dfa.loss_fn(model, seqs)
        opt.zero_grad()
        loss.backward()
        opt.step()

    st = timed(step, max(2, args.reps // 2))
    print(f"per batch of 32: batched {fast * 1e3:.1f} ms, loop {slow * 1e3:.1f} ms (DFAs given: "
          f"{fast_g * 1e3:.1f} / {slow_g * 1e3:.1f} ms); one training step {st * 1e3:.1f} ms")
    print(f"sampler_speedup_given_dfas: {slow_g / fast_g:.2f}")
    print(f"sampler_speedup_with_dfas: {slow / fast:.2f}")
    print(f"batched_sampler_share_of_step: {fast / (fast + st):.3f}")
    print(f"loop_sampler_share_of_step: {slow / (slow + st):.3f}")


if __name__ == "__main__":
    main()

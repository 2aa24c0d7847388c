"""Accuracy vs number of demonstrations k of a pretrained model on the natural-language ICL tasks.

    python scripts/measure_language_icl.py [--model smollm2-135m] [--n-prompts 40] [--seed 0]

Prints one table per dataset: rows = label set, columns = k, cells = accuracy over n_prompts
prompts (classification datasets: argmax among the label set's tokens, chance 1/#labels; open
datasets such as capitals: top-1 over the whole vocabulary). Figures come last, one per line, as
``name: value``.
"""

from __future__ import annotations

import argparse
import time

import torch

from experiments.models.loading import load_model
from experiments.tasks import language

PLAN: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {
    "sentiment": (language.LABEL_SETS, (0, 1, 2, 4, 8)),
    "sentiment-phrases": (language.LABEL_SETS, (0, 1, 2, 4, 8)),
    "capitals": (("natural",), (0, 1, 2, 3, 4, 8)),
    "antonyms": (("natural",), (0, 1, 2, 4, 8)),
    "uppercase": (("natural",), (0, 1, 2, 4, 8)),
    "en-fr": (("natural",), (0, 1, 2, 4, 8)),
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n-prompts", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--datasets", nargs="*", default=list(PLAN))
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    model = load_model(args.model)
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f} s")
    figures: list[tuple[str, float]] = []
    with torch.no_grad():
        for ds in args.datasets:
            label_sets, ks = PLAN.get(ds, (("natural",), (0, 1, 2, 4, 8)))
            rows = language.accuracy_table(model, ds, ks, label_sets, n_prompts=args.n_prompts,
                                           seed=args.seed)
            chance = rows[0]["chance"]
            scoring = f"chance {chance:.2f}" if chance else "top-1 over the vocabulary"
            print(f"\n{ds} ({args.n_prompts} prompts per cell, {scoring})")
            print(f"{'label set':<10}" + "".join(f"{'k=' + str(k):>7}" for k in ks))
            for ls in label_sets:
                accs = [r["accuracy"] for r in rows if r["label_set"] == ls]
                print(f"{ls:<10}" + "".join(f"{a:>7.2f}" for a in accs))
                figures += [(f"{ds}.{ls}.k{k}", a) for k, a in zip(ks, accs)]
    print()
    for name, val in figures:
        print(f"{name}: {val:.3f}")


if __name__ == "__main__":
    main()

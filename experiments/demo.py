"""``iclwb demo``: the standard study on the built-in models (the README's main job)."""

from __future__ import annotations


def run_demo(quick: bool = False, out_dir: str = "results/demo", fresh: bool = False) -> int:
    from experiments.models import load_model
    from experiments.scan import format_scan, head_scan

    model = load_model("induction-2l")
    print("Head scan of induction-2l")
    print(format_scan(head_scan(model)))
    return 0

"""The training loop shared by the zoo's token models.

``train_and_save`` trains a zoo model by name and writes its checkpoint, card and (optionally) its
checkpoint series. ``fit`` runs AdamW (weight decay 0.01) with a linear warm-up then a cosine decay to a tenth of the
peak learning rate, clips gradients at norm 1, and keeps an exponential moving average of the
loss. The caller supplies ``loss_at(step)``, which draws that step's batch from its own seeded
generator and returns the loss, so each model's data and objective stay in its own module.
"""

from __future__ import annotations

import importlib
import inspect
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from experiments.models import zoo
from experiments.models.zoo.series import INDEX, SERIES_DIR, Recorder
from probes.hooked import HookedModel


@dataclass
class FitStats:
    loss_ema: float
    cpu_seconds: float


def warmup_cosine(lr: float, warmup: int, steps: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then cosine from ``lr`` down to ``0.1 * lr``."""

    def at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    return at


def fit(model: HookedModel, loss_at: Callable[[int], torch.Tensor], steps: int, lr: float,
        warmup: int, desc: str, progress: bool = True,
        every: tuple[int, Callable[[int], str]] | None = None,
        recorder: Recorder | None = None) -> FitStats:
    """Train ``model`` in place for ``steps`` steps; ``every=(n, fn)`` logs ``fn(step)`` every n.

    ``recorder`` (a checkpoint series, ``experiments.models.zoo.series``) sees every update.
    """
    if recorder is not None:
        recorder.begin(steps)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = warmup_cosine(lr, warmup, steps)
    loss_ema = float("nan")
    cpu0 = time.process_time()
    bar = tqdm(range(steps), disable=not progress, desc=desc)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = schedule(step)
        loss = loss_at(step)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        value = float(loss.detach())
        if recorder is not None:
            recorder.after_step(step + 1, model, value)
        loss_ema = 0.98 * loss_ema + 0.02 * value if step else value
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss_ema:.3f}")
        if progress and every is not None and step % every[0] == every[0] - 1:
            model.eval()
            with torch.no_grad():
                bar.write(every[1](step))
            model.train()
    model.eval()
    return FitStats(loss_ema=loss_ema, cpu_seconds=time.process_time() - cpu0)


def train_and_save(name: str, seed: int | None = None, steps: int | None = None,
                   progress: bool = True, root: Path | None = None,
                   checkpoints: int | None = None) -> dict[str, Any]:
    """Train ``name`` from ``seed`` and save it; ``checkpoints=N`` also keeps a series of N
    checkpoints evenly spaced in log step (``experiments.models.zoo.series``). Without it an older series
    of this model is removed (it would describe another run)."""
    spec = zoo.get_spec(name)
    seed = spec.default_seed if seed is None else seed
    out = (root or zoo.CHECKPOINT_DIR) / name
    kwargs: dict[str, Any] = {}
    recorder = None
    if checkpoints is not None:
        module = importlib.import_module(zoo.ZOO_MODULES[name])
        probe = getattr(module, "probe_loss", None)
        if probe is None or "recorder" not in inspect.signature(spec.train).parameters:
            raise ValueError(f"zoo model {name!r} does not support checkpoint series yet (its trainer "
                             f"takes no recorder); train it without --checkpoints")
        recorder = Recorder(name, seed, checkpoints, out, probe,
                                   probe=(probe.__doc__ or "").strip().splitlines()[0])
        kwargs["recorder"] = recorder
    t0 = time.perf_counter()
    result = spec.train(seed=seed, steps=steps, progress=progress, **kwargs)
    elapsed = time.perf_counter() - t0
    if recorder is not None:
        recorder.finish()
        result.extra = {**result.extra, "checkpoint_series": {
            "n": len(recorder.steps), "steps": recorder.steps,
            "index": f"{SERIES_DIR}/{INDEX}"}}
    elif (out / SERIES_DIR).exists():
        shutil.rmtree(out / SERIES_DIR)
    zoo.save_checkpoint(name, result, seed, elapsed, root)
    return zoo.read_card(name, root)

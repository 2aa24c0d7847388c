"""Checkpoint series: N snapshots of a zoo model taken during training, evenly spaced in log step.

``iclwb zoo train NAME --checkpoints N`` passes a ``Recorder`` to the model's trainer. After every
optimizer update the trainer calls ``recorder.after_step(step, model, train_loss)`` (``step`` =
updates done, 1-based); at the chosen steps the recorder writes the weights and measures the
model's *probe loss*: the loss on one fixed batch of its training distribution, drawn from a fixed
seed by the model module's ``probe_loss(model)``. A reloaded checkpoint reproduces that number.

On disk, beside the final model (``checkpoints/NAME/``)::

    series/index.json                  {"name", "seed", "total_steps", "probe", "checkpoints":
                                        [{"step", "loss", "train_loss", "file", "sha256"}...],
                                        "train_loss_log": [loss of every update's batch]}
    series/step_000012.safetensors     weights after 12 updates (float32, never pickled)

A run writes into ``series.partial/`` as it goes (an interrupted run keeps what it wrote, with
``"complete": false``) and renames it to ``series/`` when training ends, so a shipped series is
replaced only by a finished one. The final checkpoint of the series is the final model (the same
weights as ``model.safetensors``).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from experiments.models.zoo import CHECKPOINT_DIR, build_model, read_card
from probes.hooked import HookedModel
from probes.provenance import file_sha256

SERIES_DIR = "series"
INDEX = "index.json"


def log_steps(total: int, n: int) -> list[int]:
    """``n`` distinct update counts in [1, total], evenly spaced in log step, ending at ``total``."""
    if total < 1:
        raise ValueError(f"total steps must be >= 1, got {total}")
    if n < 2:
        raise ValueError(f"a checkpoint series needs at least 2 checkpoints, got {n}")
    if n > total:
        raise ValueError(f"cannot take {n} distinct checkpoints from {total} steps; lower --checkpoints")
    raw = [math.exp(math.log(total) * i / (n - 1)) for i in range(n)]
    out: list[int] = []
    for i, x in enumerate(raw):
        lo = out[-1] + 1 if out else 1
        hi = total - (n - 1 - i)  # leave room for the later ones
        out.append(min(max(round(x), lo), hi))
    return out


class Recorder:
    """Collects a checkpoint series during one training run (see the module docstring)."""

    def __init__(self, name: str, seed: int, n: int, out_dir: Path,
                 probe_loss: Callable[[HookedModel], float], probe: str = "") -> None:
        if n < 2:
            raise ValueError(f"a checkpoint series needs at least 2 checkpoints, got {n}")
        self.name, self.seed, self.n = name, seed, n
        self.probe_loss, self.probe = probe_loss, probe
        self.final_dir = Path(out_dir) / SERIES_DIR
        self.dir = Path(out_dir) / (SERIES_DIR + ".partial")
        self.steps: list[int] = []
        self._wanted: set[int] = set()
        self.index: dict[str, Any] = {}

    def begin(self, total_steps: int) -> None:
        """Called by the trainer before its first update, with the run's number of updates."""
        self.total_steps = total_steps
        self.steps = log_steps(total_steps, self.n)
        self._wanted = set(self.steps)
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.index = {"name": self.name, "seed": self.seed, "total_steps": total_steps,
                      "probe": self.probe, "complete": False, "checkpoints": [],
                      "train_loss_log": []}

    def after_step(self, step: int, model: HookedModel, train_loss: float) -> None:
        """Call after each optimizer update; ``train_loss`` is that update's batch loss."""
        if not self.steps:
            raise RuntimeError("Recorder.begin(total_steps) must be called before the first update")
        self.index["train_loss_log"].append(round(float(train_loss), 5))
        if step not in self._wanted:
            return
        was_training = model.training
        model.eval()
        with torch.no_grad():
            loss = float(self.probe_loss(model))
        model.train(was_training)
        fname = f"step_{step:06d}.safetensors"
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(state, str(self.dir / fname))
        self.index["checkpoints"].append({
            "step": step, "loss": loss, "train_loss": round(float(train_loss), 5), "file": fname,
            "sha256": file_sha256(self.dir / fname)})
        self._write_index()

    def _write_index(self) -> None:
        tmp = self.dir / (INDEX + ".tmp")
        tmp.write_text(json.dumps(self.index, indent=1) + "\n")
        tmp.replace(self.dir / INDEX)

    def finish(self) -> Path:
        """Mark the series complete and move it into place (replacing an older series)."""
        got = [c["step"] for c in self.index["checkpoints"]]
        if got != self.steps:
            raise RuntimeError(f"checkpoint series of {self.name!r} incomplete: got steps {got}, "
                               f"planned {self.steps}; the trainer must call after_step every update")
        self.index["complete"] = True
        self._write_index()
        if self.final_dir.exists():
            shutil.rmtree(self.final_dir)
        self.dir.replace(self.final_dir)
        self.dir = self.final_dir
        return self.final_dir


# ----------------------------------------------------------------------------------- reading
def series_dir(name: str, root: Path | None = None) -> Path:

    return (root or CHECKPOINT_DIR) / name / SERIES_DIR


def read_index(name: str, root: Path | None = None) -> dict[str, Any]:
    path = series_dir(name, root) / INDEX
    if not path.exists():
        raise FileNotFoundError(
            f"zoo model {name!r} has no checkpoint series at {path.parent}; train one with "
            f"`iclwb zoo train {name} --checkpoints 12`")
    index = json.loads(path.read_text())
    if not index.get("complete"):
        raise FileNotFoundError(f"the checkpoint series of {name!r} at {path.parent} is incomplete "
                                f"(an interrupted run); retrain with `iclwb zoo train {name} --checkpoints N`")
    final = path.parent.parent / "model.safetensors"
    last = index["checkpoints"][-1]
    if final.exists() and file_sha256(final) != last["sha256"]:
        raise FileNotFoundError(
            f"the checkpoint series of {name!r} is from another training run than its model "
            f"(its last checkpoint differs from {final}); retrain with "
            f"`iclwb zoo train {name} --checkpoints {len(index['checkpoints'])}`")
    return index


def has_series(name: str, root: Path | None = None) -> bool:
    try:
        read_index(name, root)
        return True
    except FileNotFoundError:
        return False


def load_series_model(name: str, step: int, root: Path | None = None) -> HookedModel:
    """The zoo model's architecture with the weights of its checkpoint at ``step``."""

    index = read_index(name, root)
    entry = next((c for c in index["checkpoints"] if c["step"] == step), None)
    if entry is None:
        steps = [c["step"] for c in index["checkpoints"]]
        raise KeyError(f"{name!r} has no checkpoint at step {step}; its steps: {steps}")
    path = series_dir(name, root) / entry["file"]
    if entry.get("sha256") and file_sha256(path) != entry["sha256"]:
        raise RuntimeError(f"checkpoint {path} does not match the sha256 in its index (a changed or "
                           f"damaged file); retrain with `iclwb zoo train {name} --checkpoints N`")
    card = read_card(name, root)
    model = build_model(card["arch"], card["config"])
    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    buffers = dict(model.named_buffers())
    missing = [k for k in missing if k not in buffers]
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {path} does not match the architecture of {name!r}: missing "
                           f"{missing[:5]}, unexpected {unexpected[:5]}")
    model.eval()
    model.zoo_card = {**card, "checkpoint_step": step}
    return model

"""Every stored unit judged against the running code: ``stored_states`` (done, stale, damaged,
unchecked) and ``expected_provenance`` (what the running code would store for a unit). Used by
``iclwb sweep status``, the sweep runner and ``ResultsStore.selection`` (the current unit of each
cell); kept apart from ``store`` and ``executors`` so that neither imports the other."""

from __future__ import annotations

from typing import Any

from experiments.runs import modelinfo
from experiments.runs.analyses import get_analysis
from experiments.runs.config import Unit
from experiments.runs.registry import REGISTRY


def expected_provenance(units: list[Unit]) -> dict[str, dict[str, Any]]:
    """What the running code would store for each unit (key -> model_hash, analysis_version,
    code_hash): a stored unit that differs is stale (``ResultsStore.stale_reason``)."""

    hashes = {m: modelinfo.model_hash(m) for m in sorted({u.model for u in units})}
    prints = {a: get_analysis(a).fingerprint() for a in sorted({u.analysis for u in units})}
    return {u.key: {"model_hash": hashes[u.model], **prints[u.analysis]} for u in units}


def stored_states(store: Any) -> dict[str, tuple[str, str]]:
    """Every unit file in ``store`` judged against the running code: key -> (``done`` | ``stale``
    | ``damaged`` | ``unchecked``, reason); ``unchecked``: its analysis is not registered in this
    process (a plugin analysis whose module was not imported)."""

    out: dict[str, tuple[str, str]] = {}
    units = []
    for key in sorted(store.unit_files()):
        why = store.problem(key)
        u = store.stored_unit(key) if why is None else None
        if why is not None:
            out[key] = ("damaged", why)
        elif u is None:
            out[key] = ("damaged", "no unit in its metadata")
        elif u.analysis not in REGISTRY:
            out[key] = ("unchecked", f"analysis {u.analysis!r} is not registered here (give the "
                                     f"sweep config, whose imports register it)")
        else:
            units.append(u)
    expect = expected_provenance(units)
    out.update(store.classify(units, expect))
    return out

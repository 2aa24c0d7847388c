"""Random DFAs for in-context language learning (Akyürek et al. 2024): ``DFA`` (a partial DFA over
the letters, every state accepting), ``random_dfa`` / ``train_dfa`` (the training distribution,
minimised, held-out languages excluded) and ``heldout_dfas`` (the fixed evaluation languages).
The sequences built from them and the metrics are in ``experiments.tasks.icll``."""

from __future__ import annotations

import functools
import hashlib
import random
from collections import deque
from dataclasses import dataclass

from experiments.tasks.base import TaskError

N_LETTERS = 18
LETTERS = "abcdefghijklmnopqr"
N_STATES = (4, 12)
ALPHABET_SIZE = (4, 18)
OUT_EDGES = (1, 3)
N_HELDOUT = 500
HELDOUT_SEED = 2024_0301


# ---------------------------------------------------------------------------------------- DFA
@dataclass(frozen=True)
class DFA:
    """A partial DFA: ``transitions[s]`` maps a letter id to the next state; all states accept."""

    n_states: int
    alphabet: tuple[int, ...]
    transitions: tuple[dict[int, int], ...]
    start: int = 0

    def accepts(self, word: list[int]) -> bool:
        """True if walking ``word`` from the start never leaves the DFA (all states accept)."""
        return self.run(word) is not None

    def run(self, word: list[int]) -> int | None:
        """The state reached after ``word``, or None if a symbol has no transition."""
        s = self.start
        for c in word:
            nxt = self.transitions[s].get(int(c))
            if nxt is None:
                return None
            s = nxt
        return s

    def legal(self, state: int) -> list[int]:
        return sorted(self.transitions[state])

    def sample(self, length: int, rng: random.Random) -> list[int]:
        """A string of ``length`` letters by a uniform walk from the start state."""
        s, out = self.start, []
        for _ in range(length):
            c = rng.choice(sorted(self.transitions[s]))
            out.append(c)
            s = self.transitions[s][c]
        return out

    def used_symbols(self) -> list[int]:
        return sorted({c for t in self.transitions for c in t})

    def minimized(self) -> "DFA":
        """The minimal DFA of the same language (Moore partition refinement, canonical numbering)."""
        part = [0] * self.n_states  # all states accepting; the missing-edge sink is implicit
        while True:
            sigs = [
                (part[s], tuple(sorted((c, part[t]) for c, t in self.transitions[s].items())))
                for s in range(self.n_states)
            ]
            ids: dict = {}
            new = [ids.setdefault(sig, len(ids)) for sig in sigs]
            if len(ids) == len(set(part)):
                break
            part = new
        # one representative per block, renumbered breadth-first from the start
        order = {part[self.start]: 0}
        queue = deque([self.start])
        trans: dict[int, dict[int, int]] = {}
        while queue:
            s = queue.popleft()
            b = order[part[s]]
            if b in trans:
                continue
            trans[b] = {}
            for c in sorted(self.transitions[s]):
                t = self.transitions[s][c]
                if part[t] not in order:
                    order[part[t]] = len(order)
                    queue.append(t)
                trans[b][c] = order[part[t]]
        n = len(order)
        return DFA(n, self.alphabet, tuple(trans[i] for i in range(n)))

    def canonical_hash(self) -> str:
        """Hash of the minimal DFA in breadth-first numbering: same language <=> same hash."""
        m = self.minimized()
        text = ";".join(",".join(f"{c}>{t}" for c, t in sorted(tr.items())) for tr in m.transitions)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {"n_states": self.n_states, "alphabet": list(self.alphabet),
                "transitions": [{LETTERS[c]: t for c, t in tr.items()} for tr in self.transitions]}


def random_dfa(rng: random.Random) -> DFA:
    """One DFA per the module docstring (resampled until 4-12 states are reachable)."""
    while True:
        n = rng.randint(*N_STATES)
        alphabet = sorted(rng.sample(range(N_LETTERS), rng.randint(*ALPHABET_SIZE)))
        trans: list[dict[int, int]] = []
        for s in range(n):
            m = min(rng.randint(*OUT_EDGES), len(alphabet), n - 1)
            syms = rng.sample(alphabet, m)
            targets = rng.sample([t for t in range(n) if t != s], m)
            trans.append(dict(zip(syms, targets)))
        dfa = _trim(DFA(n, tuple(alphabet), tuple(trans)))
        if N_STATES[0] <= dfa.n_states <= N_STATES[1]:
            return dfa


def _trim(dfa: DFA) -> DFA:
    """Keep the states reachable from the start, renumbered in breadth-first order."""
    order, queue = {dfa.start: 0}, deque([dfa.start])
    while queue:
        s = queue.popleft()
        for c in sorted(dfa.transitions[s]):
            t = dfa.transitions[s][c]
            if t not in order:
                order[t] = len(order)
                queue.append(t)
    inv = sorted(order, key=lambda s: order[s])
    trans = tuple({c: order[t] for c, t in dfa.transitions[s].items()} for s in inv)
    return DFA(len(order), dfa.alphabet, trans)


@functools.lru_cache(maxsize=4)
def heldout_dfas(n: int = N_HELDOUT, seed: int = HELDOUT_SEED) -> tuple[DFA, ...]:
    """The fixed held-out DFAs (distinct languages), drawn from ``seed``."""
    rng = random.Random(seed)
    out: list[DFA] = []
    seen: set[str] = set()
    while len(out) < n:
        d = random_dfa(rng)
        h = d.canonical_hash()
        if h not in seen:
            seen.add(h)
            out.append(d)
    return tuple(out)


@functools.lru_cache(maxsize=4)
def heldout_hashes(n: int = N_HELDOUT, seed: int = HELDOUT_SEED) -> frozenset[str]:
    return frozenset(d.canonical_hash() for d in heldout_dfas(n, seed))


def train_dfa(rng: random.Random) -> DFA:
    """A random DFA whose language is not in the held-out set."""
    held = heldout_hashes()
    while True:
        d = random_dfa(rng)
        if d.canonical_hash() not in held:
            return d


def dfas_for_split(split: str, n: int, rng: random.Random) -> list[DFA]:
    if split == "train":
        return [train_dfa(rng) for _ in range(n)]
    if split == "heldout":
        pool = heldout_dfas()
        return [pool[i] for i in rng.sample(range(len(pool)), n)] if n <= len(pool) else \
            [pool[rng.randrange(len(pool))] for _ in range(n)]
    raise TaskError(f"unknown split {split!r}; use 'train' or 'heldout'")

"""The replay buffer of model rollouts for :class:`seqlevel.trainers.SequenceMatchTrainer` (Algorithm 1, §5).

A FIFO of trajectories ``(prompt, actions, born)`` produced by the backtracking decoder; the oldest leave first
when it is full. Draws are made with an explicit ``numpy`` generator seeded by the caller, so the buffer needs no
random state of its own, and :meth:`state_dict` / :meth:`load_state_dict` (plain JSON) are all a checkpoint needs
for a resumed run to draw the same trajectories as the uninterrupted one.
"""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from seqlevel.backspace import Encoded

STATE_FILE = "sequencematch_replay.json"


@dataclass
class Rollout:
    """One model trajectory: ``prompt`` ids, ``actions`` (``<bksp>`` and a final ``<eos>`` included) and the optimizer
    step at which it was generated (``born``). ``encoded`` caches its single-pass encoding."""

    prompt: list[int]
    actions: list[int]
    born: int
    encoded: Encoded | None = field(default=None, repr=False, compare=False)


class ReplayBuffer:
    """FIFO buffer of at most ``capacity`` rollouts.

    Args:
        capacity: the most rollouts kept; must be >= 1.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"replay buffer capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.items: deque[Rollout] = deque(maxlen=self.capacity)
        self.refreshes = 0  # how many times rollouts were added

    def __len__(self) -> int:
        return len(self.items)

    def add(self, rollouts: list[Rollout]) -> None:
        """Append rollouts; the oldest leave when the buffer is full."""
        self.items.extend(rollouts)
        self.refreshes += 1

    def sample(self, n: int, rng: np.random.Generator) -> list[Rollout]:
        """``n`` rollouts drawn uniformly (without replacement when the buffer holds at least ``n``)."""
        if not self.items:
            raise ValueError("the replay buffer is empty; refresh it before drawing model trajectories")
        idx = rng.choice(len(self.items), size=n, replace=len(self.items) < n)
        return [self.items[int(i)] for i in idx]

    def stats(self, step: int, backspace_id: int) -> dict[str, float]:
        """Size, mean age in optimizer steps, and the backspace rate over all buffered actions."""
        if not self.items:
            return {"replay/size": 0.0}
        n_act = sum(len(r.actions) for r in self.items)
        n_bk = sum(sum(1 for a in r.actions if a == backspace_id) for r in self.items)
        return {"replay/size": float(len(self.items)),
                "replay/age": float(np.mean([step - r.born for r in self.items])),
                "replay/backspace_rate": n_bk / max(n_act, 1),
                "replay/actions_per_rollout": n_act / len(self.items)}

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "refreshes": self.refreshes,
                "items": [[r.prompt, r.actions, r.born] for r in self.items]}

    def load_state_dict(self, state: dict) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"the checkpoint's replay buffer holds up to {state['capacity']} rollouts but "
                             f"replay_buffer_size is {self.capacity}; resume with the same replay_buffer_size")
        self.items = deque((Rollout(list(p), list(a), int(b)) for p, a, b in state["items"]), maxlen=self.capacity)
        self.refreshes = int(state["refreshes"])

    def save(self, directory: str, name: str = STATE_FILE) -> None:
        with open(os.path.join(directory, name), "w") as f:
            json.dump(self.state_dict(), f)

    def load(self, directory: str, name: str = STATE_FILE) -> bool:
        """Load ``name`` from ``directory``; returns False when there is no such file (a run saved before warm-up
        ended)."""
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            return False
        with open(path) as f:
            self.load_state_dict(json.load(f))
        return True

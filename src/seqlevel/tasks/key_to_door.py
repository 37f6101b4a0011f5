"""``key_to_door``: the three-room sparse-reward grid world of Decision Transformer (Table 6) and CAT (§3.1).

Reconstruction ``KTD-DT-v0`` of tasks.md §B.7 (the DT paper gives no geometry; every choice below is from there):

* **Phase 1, key room** (TVT explore room, 7x7 board): the key is on one of the 10 upper cells, the agent starts
  on one of the 10 lower cells (both uniform); the two halves are joined by a 3-cell gap. Stepping on the key
  picks it up (the key disappears from view). ``T1 = 16`` steps.
* **Phase 2, empty distractor room** (5x9 interior, fixed start at the bottom centre): nothing to do. ``T2 = 20``.
* **Phase 3, door room** (3x3 interior, start in the centre, a door in the top wall above the centre): entering
  the door while holding the key gives reward 1 and ends the episode; without the key the door is a wall.
  ``T3 = 15``. Whether the key is held is **not** observable here (the credit-assignment problem).
* Actions N, S, W, E; moving into a wall is a no-op. Phases have fixed length; the action that ends a phase moves
  the agent into the next room.

Uniform-random play succeeds about 3% of the time (B.7 calibration: P(key) ≈ 0.11, P(door | key) ≈ 0.27 for
(16, 15); :func:`random_success_rate` measures it).

**Trajectories as tokens**: ``<bos> KEY_k OBS a OBS a ... a a a ... OBS a <eos>``; ``KEY_k`` tells where the key
is, ``OBS`` is one token per observation: in the key room the whole room (agent cell x key cell, or "key gone"; the
full-room observation of tasks.md B.7 (b)), elsewhere the agent's cell (the door room never shows the key); ``a``
is the action. Inside the empty room only actions are written (its cells carry no information; this keeps episodes
at 85 tokens instead of 105, which matters on CPU). The attribute is win (1) / loss (0). The dataset holds 10,000 uniform-random trajectories.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

T1, T2, T3 = 16, 20, 15
ACTIONS = ("N", "S", "W", "E")
_MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])

# room layouts as sets of open cells (row, col); the door is handled separately
_ROOM1 = [(r, c) for r in (1, 2) for c in range(1, 6)] + [(3, c) for c in (2, 3, 4)] + \
         [(r, c) for r in (4, 5) for c in range(1, 6)]
_KEY_CELLS = [(r, c) for r in (1, 2) for c in range(1, 6)]
_START_CELLS = [(r, c) for r in (4, 5) for c in range(1, 6)]
_ROOM2 = [(r, c) for r in range(1, 6) for c in range(1, 10)]
_START2 = (5, 5)
_ROOM3 = [(r, c) for r in range(1, 4) for c in range(1, 4)]
_START3 = (2, 2)
_DOOR = (0, 2)

# token ids
PAD, BOS, EOS = 0, 1, 2
ACTION0 = 3  # N S W E = 3..6
KEY0 = ACTION0 + 4  # KEY_k, k in 0..9
OBS1 = KEY0 + len(_KEY_CELLS)  # phase-1 room as a whole: agent cell x (key cell, or 10 = key gone)
OBS2 = OBS1 + len(_ROOM1) * (len(_KEY_CELLS) + 1)
OBS3 = OBS2 + len(_ROOM2)
VOCAB_SIZE = OBS3 + len(_ROOM3)
ACTION_IDS = list(range(ACTION0, ACTION0 + 4))

_ROOMS = {1: _ROOM1, 2: _ROOM2, 3: _ROOM3}


def _open_grid(room) -> np.ndarray:
    g = np.zeros((8, 11), dtype=bool)
    for r, c in room:
        g[r, c] = True
    return g


_OPEN = np.stack([np.zeros((8, 11), dtype=bool)] + [_open_grid(_ROOMS[p]) for p in (1, 2, 3)])  # (4, 8, 11)
_CELL = {p: np.zeros((8, 11), dtype=int) for p in _ROOMS}  # (row, col) -> cell index within the room
for _p, _room in _ROOMS.items():
    for _i, (_r, _c) in enumerate(_room):
        _CELL[_p][_r, _c] = _i
_KEY_RC = np.array(_KEY_CELLS)


class KeyToDoor:
    """A batch of ``n`` independent episodes stepped together (numpy, vectorised).

    Attributes after :meth:`reset`: ``phase (n,)``, ``pos (n, 2)``, ``key (n,)`` key-cell index, ``has_key``,
    ``key_taken`` (picked up in phase 1), ``t`` step count, ``done``, ``success``, ``steps_to_win``.
    """

    def __init__(self, n: int, seed: int = 0):
        self.n, self.rng = n, np.random.default_rng(seed)
        self.reset()

    def reset(self) -> np.ndarray:
        n = self.n
        self.key = self.rng.integers(0, len(_KEY_CELLS), n)
        starts = self.rng.integers(0, len(_START_CELLS), n)
        self.pos = np.array([_START_CELLS[s] for s in starts])
        self.phase = np.ones(n, dtype=int)
        self.t = np.zeros(n, dtype=int)
        self.has_key = np.zeros(n, dtype=bool)
        self.done = np.zeros(n, dtype=bool)
        self.success = np.zeros(n, dtype=bool)
        self.steps_to_win = np.full(n, -1)
        self.key_step = np.full(n, -1)
        return self.observation()

    def key_tokens(self) -> np.ndarray:
        return KEY0 + self.key

    def observation(self) -> np.ndarray:
        """``(n,)`` observation token of each episode's current state."""
        r, c = self.pos[:, 0], self.pos[:, 1]
        obs1 = OBS1 + _CELL[1][r, c] * (len(_KEY_CELLS) + 1) + np.where(self.has_key, len(_KEY_CELLS), self.key)
        obs2 = OBS2 + _CELL[2][r, c]
        obs3 = OBS3 + _CELL[3][r, c]
        return np.where(self.phase == 1, obs1, np.where(self.phase == 2, obs2, obs3))

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply ``actions (n,)`` (0..3 = N S W E) to live episodes; returns ``(observation, reward)``."""
        live = ~self.done
        reward = np.zeros(self.n)
        new = self.pos + _MOVES[actions]  # (n, 2)
        r, c = new[:, 0], new[:, 1]
        at_door = live & (self.phase == 3) & (r == _DOOR[0]) & (c == _DOOR[1])
        win = at_door & self.has_key
        reward[win] = 1.0
        self.success |= win
        self.done |= win
        self.steps_to_win[win] = self.t[win] + 1
        open_ = _OPEN[self.phase, r.clip(0, 7), c.clip(0, 10)]
        move = live & ~at_door & open_
        self.pos[move] = new[move]
        key_rc = _KEY_RC[self.key]  # (n, 2)
        got = live & (self.phase == 1) & ~self.has_key & (self.pos == key_rc).all(1)
        self.has_key |= got
        self.key_step[got] = self.t[got] + 1
        self.t[live] += 1
        to2 = live & (self.phase == 1) & (self.t == T1)
        to3 = live & (self.phase == 2) & (self.t == T1 + T2)
        self.phase[to2], self.pos[to2] = 2, _START2
        self.phase[to3], self.pos[to3] = 3, _START3
        self.done |= live & (self.t >= T1 + T2 + T3)
        return self.observation(), reward


SHORTEST_WIN = T1 + T2 + 2  # the key is always reachable within T1; then two moves north from the door-room centre


@dataclass
class Trajectories:
    """``tokens``: one id list per episode; ``success (n,)`` bool; ``key_step (n,)`` (-1 when never picked up)."""

    tokens: list[list[int]]
    success: np.ndarray
    key_step: np.ndarray


def random_trajectories(n: int = 10_000, seed: int = 0) -> Trajectories:
    """``n`` uniform-random-policy episodes as token sequences (the DT/CAT "10K random trajectories" dataset)."""
    env = KeyToDoor(n, seed)
    rng = np.random.default_rng(seed + 1)
    toks = _episode_tokens(env, lambda: rng.integers(0, 4, n))
    return Trajectories(tokens=toks, success=env.success.copy(), key_step=env.key_step.copy())


def _episode_tokens(env: KeyToDoor, next_actions: Callable[[], np.ndarray | None]) -> list[list[int]]:
    """Play ``env`` (just reset) with ``next_actions() -> (n,)`` until done (or it returns None); the token ids."""
    n = env.n
    cols = [np.full(n, BOS), env.key_tokens(), env.observation()]  # one (n,) column per token slot
    while not env.done.all():
        live = ~env.done
        a = next_actions()
        if a is None:
            break
        obs, _ = env.step(a)
        cols.append(np.where(live, ACTION0 + a, -1))
        # no observation after a win (the episode ended) or inside the empty room (nothing there to see)
        cols.append(np.where(~env.done & (env.phase != 2), obs, -1))
    grid = np.stack(cols, 1)  # (n, L); -1 = nothing
    return [[int(x) for x in row if x >= 0] + [EOS] for row in grid]


def random_success_rate(n: int = 100_000, seed: int = 0) -> float:
    """Success fraction of uniform-random play over ``n`` episodes (≈ 0.03 by design)."""
    env = KeyToDoor(n, seed)
    rng = np.random.default_rng(seed + 1)
    while not env.done.all():
        env.step(rng.integers(0, 4, n))
    return float(env.success.mean())


def dataset(n: int = 10_000, seed: int = 0, successes_only: bool = False):
    """``datasets.Dataset`` with ``input_ids`` (eos included) and ``attribute`` (1 = win)."""
    import datasets

    tr = random_trajectories(n, seed)
    keep = [i for i in range(n) if tr.success[i] or not successes_only]
    return datasets.Dataset.from_dict({"input_ids": [tr.tokens[i] for i in keep],
                                       "attribute": [int(tr.success[i]) for i in keep]})


def behaviour_action_values() -> tuple[np.ndarray, float]:
    """Exact ``Q^β(s, a) = P(win | s, a)`` of the uniform-random policy in the key room, by dynamic programming.

    This is the attribute a CAT head trained on :func:`random_trajectories` estimates at key-room decisions (the
    label is the episode's win; the data policy is uniform), so it is the ground truth for checking the head, and
    greedy play on it is the ceiling of CAT's one-step policy improvement.

    Returns:
        ``(q, p_door)``: ``q (T1, 8, 11, 10, 4)``, the win probability after action ``a`` (N S W E) taken at step
        ``t`` of phase 1 from cell ``(r, c)`` with the key on key cell ``k`` not yet held (0 on cells that are not
        open); ``p_door``, the probability that random play in the door room reaches the door within ``T3`` steps
        when the key is held (≈ 0.27): the value of every state once the key is held.
    """
    v3 = np.zeros((8, 11))  # value in the door room with the key, k steps left (k = 0 here)
    for _ in range(T3):
        nxt = np.zeros_like(v3)
        for r, c in _ROOM3:
            s = 0.0
            for dr, dc in _MOVES:
                nr, nc = r + dr, c + dc
                s += 1.0 if (nr, nc) == _DOOR else (v3[nr, nc] if _OPEN[3, nr, nc] else v3[r, c])
            nxt[r, c] = s / 4
        v3 = nxt
    p_door = float(v3[_START3])
    q = np.zeros((T1, 8, 11, len(_KEY_CELLS), 4))
    for k, key_rc in enumerate(_KEY_CELLS):
        v_next = np.zeros((8, 11))  # value of (t + 1, cell) without the key; 0 after the last key-room step
        for t in range(T1 - 1, -1, -1):
            for r, c in _ROOM1:
                for a, (dr, dc) in enumerate(_MOVES):
                    nr, nc = (r + dr, c + dc) if _OPEN[1, r + dr, c + dc] else (r, c)
                    q[t, r, c, k, a] = p_door if (nr, nc) == key_rc else v_next[nr, nc]
            v_next = q[t].mean(-1)[..., k]
    return q, p_door


def play_behaviour_greedy(episodes: int, seed: int) -> dict:
    """Greedy play on the exact :func:`behaviour_action_values` (ties: first action): the win rate a perfect CAT
    head would give with greedy product-rule steering (α → ∞). In the door room it walks north (the best action)."""
    q, _ = behaviour_action_values()
    env = KeyToDoor(episodes, seed)
    while not env.done.all():
        r, c = env.pos[:, 0], env.pos[:, 1]
        t = np.minimum(env.t, T1 - 1)
        a1 = q[t, r, c, env.key].argmax(-1)
        a = np.where(env.phase == 1, a1, 0)
        env.step(a)
    return {"win_rate": float(env.success.mean()), "key_rate": float((env.key_step >= 0).mean())}


@dataclass
class Decisions:
    """Key-room decisions (key not yet held) read off token sequences; every field is ``(N,)``.

    ``seq``: sequence index; ``pos``: position of the observation token (the head is read there, at the candidate
    actions); ``t``: step in phase 1; ``r, c``: agent cell; ``key``: key-cell index; ``action``: realised action
    (0..3 = N S W E); ``label``: the sequence's win label.
    """

    seq: np.ndarray
    pos: np.ndarray
    t: np.ndarray
    r: np.ndarray
    c: np.ndarray
    key: np.ndarray
    action: np.ndarray
    label: np.ndarray

    def exact_q(self) -> np.ndarray:
        """``(N, 4)`` exact ``Q^β(s, a)`` of :func:`behaviour_action_values` at these decisions."""
        q, _ = behaviour_action_values()
        return q[self.t, self.r, self.c, self.key]


KEY_ROOM_PREFIX = 2 + 2 * T1  # tokens up to and including the last key-room observation: <bos> KEY (OBS a)*T1


def key_room_decisions(tokens: list[list[int]], labels) -> Decisions:
    """All key-room decisions taken before the key was picked up, in ``tokens`` (as :func:`random_trajectories`
    writes them: the observation of step ``t`` at position ``2 + 2t``, its action right after)."""
    labels = np.asarray(labels)
    out = {k: [] for k in ("seq", "pos", "t", "r", "c", "key", "action", "label")}
    n_keys = len(_KEY_CELLS)
    for i, seq in enumerate(tokens):
        for t in range(T1):
            p = 2 + 2 * t
            if p + 1 >= len(seq) or not OBS1 <= seq[p] < OBS2:
                break
            cell, k = divmod(seq[p] - OBS1, n_keys + 1)
            a = seq[p + 1] - ACTION0
            if k == n_keys or not 0 <= a < 4:  # key already held: every action has the same value
                break
            r, c = _ROOM1[cell]
            for name, v in zip(out, (i, p, t, r, c, k, a, labels[i])):
                out[name].append(v)
    return Decisions(**{k: np.asarray(v, dtype=np.int64) for k, v in out.items()})


def key_to_door_tokenizer():
    """A word-level tokenizer whose ids are this module's: ``<pad> <bos> <eos>``, ``N S W E``, ``key0..key9``, then
    the observations ``r1:<cell>:<key cell or gone>``, ``r2:<cell>``, ``r3:<cell>`` (``len == VOCAB_SIZE``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    names = ["<pad>", "<bos>", "<eos>", *ACTIONS, *(f"key{k}" for k in range(len(_KEY_CELLS)))]
    names += [f"r1:{i}:{'gone' if k == len(_KEY_CELLS) else k}" for i in range(len(_ROOM1))
              for k in range(len(_KEY_CELLS) + 1)]
    names += [f"r2:{i}" for i in range(len(_ROOM2))] + [f"r3:{i}" for i in range(len(_ROOM3))]
    assert len(names) == VOCAB_SIZE and names[ACTION0] == "N" and names[OBS1] == "r1:0:0"
    tok = Tokenizer(models.WordLevel(vocab={s: i for i, s in enumerate(names)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins tokens with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")


class KeyToDoorTask:
    """Key-to-Door as a :class:`seqlevel.tasks.base.Task`: uniform-random trajectories, their exact P, and win.

    The data distribution is :func:`random_trajectories`': key cell and start cell uniform (10 each), then uniform
    actions until the episode ends, so a trajectory the dynamics can produce has ``P = 1/10 · 1/10 · (1/4)^A``
    (``A`` actions) and any other sequence has P = 0. :meth:`replay` checks which by playing the actions again.
    """

    name = "key-to-door"
    exact_p = True

    def __init__(self):
        self.tokenizer = key_to_door_tokenizer()

    def sample(self, n: int, seed: int = 0) -> list[list[int]]:
        """``n`` trajectories of :func:`random_trajectories` (``<bos> KEY OBS a … <eos>``)."""
        return random_trajectories(n, seed).tokens

    def replay(self, ids: Sequence[int]) -> tuple[list[int] | None, KeyToDoor | None]:
        """Replay the actions of ``ids`` from its key cell and start cell (read off its second and third tokens).

        Returns:
            ``(tokens, env)``: the trajectory the dynamics write for those actions (up to the episode's end or the
            last action) and the played one-episode environment; ``(None, None)`` when ``ids`` does not start
            with ``<bos> KEY_k`` and a start-room observation showing key ``k``.
        """
        ids = _with_bos(ids)
        if len(ids) < 3 or not KEY0 <= ids[1] < OBS1 or not OBS1 <= ids[2] < OBS2:
            return None, None
        k = ids[1] - KEY0
        cell, shown = divmod(ids[2] - OBS1, len(_KEY_CELLS) + 1)
        if shown != k or _ROOM1[cell] not in _START_CELLS:
            return None, None
        env = KeyToDoor(1)
        env.key, env.pos = np.array([k]), np.array([_ROOM1[cell]])
        actions = iter([t - ACTION0 for t in ids[3:] if ACTION0 <= t < KEY0])

        def next_action() -> np.ndarray | None:
            a = next(actions, None)
            return None if a is None else np.array([a])

        return _episode_tokens(env, next_action)[0], env

    def log_prob(self, ids: Sequence[int]) -> float:
        """Exact ``log P`` under uniform-random play: ``−2 log 10 − A log 4``, or ``-inf`` if the dynamics cannot
        write ``ids``."""
        if not self.score(ids)["consistent"]:
            return float("-inf")
        n_actions = sum(ACTION0 <= int(t) < KEY0 for t in ids)
        return -2 * math.log(len(_KEY_CELLS)) - n_actions * math.log(len(ACTIONS))

    def score(self, ids: Sequence[int]) -> dict[str, float]:
        """``win``: the actions of ``ids``, replayed from its key and start cells, open the door with the key;
        ``key``: they pick the key up; ``consistent``: ``ids`` is exactly the whole episode the dynamics write
        (its observations true, ended at the episode's end)."""
        tokens, env = self.replay(ids)
        if env is None:
            return {"win": 0.0, "key": 0.0, "consistent": 0.0}
        return {"win": float(env.success[0]), "key": float(env.key_step[0] >= 0),
                "consistent": float(bool(env.done[0]) and tokens == _with_bos(ids))}


def _with_bos(ids: Sequence[int]) -> list[int]:
    ids = [int(t) for t in ids]
    return ids if ids[:1] == [BOS] else [BOS, *ids]

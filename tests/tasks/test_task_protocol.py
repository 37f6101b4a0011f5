"""The Task protocol: every registered task has its shape; exact log P against naive loops; scores on hand-made cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from seqlevel.tasks import TASKS, Task, get_task
from seqlevel.tasks import key_to_door as ktd
from seqlevel.tasks.markov import MAX_LENGTH
from seqlevel.tasks.reviews import NOUNS, PHRASES, SENTIMENT_GIVEN_STAR, SENTIMENTS, STAR_TOKENS, VERBS

SMALL = {"markov": {"vocab_size": 11, "seed": 1}}  # a small world keeps sampling fast; defaults for the rest
REL = 1e-9  # relative tolerance of exact log P against the naive loops


@pytest.fixture(scope="module")
def tasks() -> dict[str, Task]:
    return {name: get_task(name, **SMALL.get(name, {})) for name in TASKS}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_registered_task_has_the_protocol_shape(tasks, name):
    t = tasks[name]
    assert isinstance(t, Task)
    assert t.name == name
    assert t.exact_p == (name != "arithmetic")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_sample_is_deterministic_per_seed_and_in_vocab(tasks, name):
    t = tasks[name]
    a, b, c = t.sample(20, seed=3), t.sample(20, seed=3), t.sample(20, seed=4)
    assert a == b and a != c
    assert len(a) == 20
    for ids in a:
        assert all(isinstance(i, int) and 0 <= i < len(t.tokenizer) for i in ids)
        assert ids[0] == t.tokenizer.bos_token_id and ids[-1] == t.tokenizer.eos_token_id


def test_get_task_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="unknown task 'nope'") as err:
        get_task("nope")
    for name in TASKS:
        assert repr(name) in str(err.value)
    assert get_task("key_to_door").name == "key-to-door"  # _ and - are interchangeable


# -- markov ---------------------------------------------------------------------------------------------------------

def _markov_naive(task, ids) -> float:
    """log P by a loop over tokens on P's tables (tokenizer id 3 + k is Markov token k, <eos> is EOS)."""
    p, eos_id = task.p, task.tokenizer.eos_token_id
    x = [p.eos if i == eos_id else i - 3 for i in ids[1:]]
    lp, prev = math.log(p.first[x[0] - 1]), x[0]
    for t, u in enumerate(x[1:], start=1):
        if t == task.max_length - 1:
            break  # the EOS at max_length is forced: probability 1
        lp += math.log(p.transition[prev - 1, u - 1]) if p.transition[prev - 1, u - 1] > 0 else -math.inf
        prev = u
    return lp


def test_markov_log_prob_matches_naive_loop_and_sampler(tasks):
    from seqlevel.tasks.markov import sample

    t = tasks["markov"]
    seqs = t.sample(50, seed=7)
    got = np.array([t.log_prob(s) for s in seqs])
    want = np.array([_markov_naive(t, s) for s in seqs])
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=REL, atol=0)
    # the sampler's own log P (official floor) agrees wherever no EOS was forced
    log_p = sample(t.p, 50, 7).log_p
    short = np.array([len(s) - 1 < MAX_LENGTH for s in seqs])
    np.testing.assert_allclose(got[short], log_p[short], rtol=REL, atol=0)


@pytest.mark.parametrize("max_length", [2, 4, 5])
def test_markov_probabilities_sum_to_one_over_a_tiny_world(max_length):
    t = get_task("markov", vocab_size=4, seed=0, max_length=max_length)  # tokens 1, 2 and EOS
    world = [4, 5, t.tokenizer.eos_token_id]
    total = sum(math.exp(t.log_prob([t.tokenizer.bos_token_id, *x]))
                for L in range(1, max_length + 2) for x in itertools.product(world, repeat=L))
    assert total == pytest.approx(1.0, abs=1e-12)


def test_markov_score_counts_impossible_transitions():
    t = get_task("markov", vocab_size=4, seed=0)
    T = t.p.transition  # (3, 3) over Markov tokens 1, 2, EOS
    bad = [(i, j) for i in (1, 2) for j in (1, 2) if T[i - 1, j - 1] == 0]
    good = [(i, j) for i in (1, 2) for j in (1, 2) if T[i - 1, j - 1] > 0]
    assert bad and good, "seed 0 must forbid some, not all, transitions of the tiny world"
    bos, eos = t.tokenizer.bos_token_id, t.tokenizer.eos_token_id
    i, j = bad[0]
    s = t.score([bos, 3 + i, 3 + j, eos])
    assert s == {"impossible": 1.0, "valid": 0.0, "length": 3.0}
    assert t.log_prob([bos, 3 + i, 3 + j, eos]) == -math.inf
    i, j = good[0]
    assert t.score([bos, 3 + i, 3 + j, eos]) == {"impossible": 0.0, "valid": 1.0, "length": 3.0}
    assert t.score([3 + i, 3 + j, eos])["valid"] == 1.0  # the leading <bos> may be left out
    assert t.score([bos, 3 + i, 3 + j]) == {"impossible": 0.0, "valid": 0.0, "length": 2.0}  # no EOS yet
    assert t.score([bos, 3 + i, eos, 3 + j]) == {"impossible": 1.0, "valid": 0.0, "length": 3.0}  # after EOS


# -- arithmetic -----------------------------------------------------------------------------------------------------

def test_arithmetic_score_is_exact_match_and_log_prob_is_not_implemented(tasks):
    t = tasks["arithmetic"]

    def ids(text: str) -> list[int]:
        return [t.tokenizer.bos_token_id, *t.tokenizer.convert_tokens_to_ids(list(text)), t.tokenizer.eos_token_id]

    assert t.score(ids("In base 10, what is 2 + 3?\n5")) == {"correct": 1.0, "valid": 1.0}
    assert t.score(ids("In base 10, what is 2 + 3?\n6")) == {"correct": 0.0, "valid": 1.0}
    assert t.score(ids("In base 2, what is 11 - 110?\n-11")) == {"correct": 1.0, "valid": 1.0}  # 3 - 6 = -3
    assert t.score(ids("In base 2, what is 11 - 110?\n-3")) == {"correct": 0.0, "valid": 1.0}  # right value, wrong base
    # a model's free sample: no separator, or no question before it
    assert t.score(ids("In base 10, what is 2 + 3?")) == {"correct": 0.0, "valid": 0.0}
    assert t.score(ids("In base ?\n5")) == {"correct": 0.0, "valid": 0.0}
    assert all(t.score(s)["correct"] == 1.0 for s in t.sample(10, seed=1))
    with pytest.raises(NotImplementedError, match="no tractable P"):
        t.log_prob(ids("In base 10, what is 2 + 3?\n5"))


# -- key-to-door ----------------------------------------------------------------------------------------------------

N, S = ktd.ACTION0, ktd.ACTION0 + 1
KEY, GONE = 7, 10  # key on cell (2, 3); observation index of "key picked up"


def _room1(cell: int, key: int) -> int:
    return ktd.OBS1 + cell * 11 + key


def _hand_made(door_actions: list[int], door_cells: list[int]) -> list[int]:
    """Start (4, 3) below the key at (2, 3): N, N picks it up, N to (1, 3), then N into the wall until the key room
    ends; N through the empty room; then ``door_actions`` from the door room's centre (cell 4), observing
    ``door_cells`` after each (none after the last)."""
    ids = [ktd.BOS, ktd.KEY0 + KEY, _room1(15, KEY)]  # (4, 3) is key-room cell 15
    ids += [N, _room1(11, KEY), N, _room1(7, GONE)]  # (3, 3) is cell 11; (2, 3), the key, is cell 7
    ids += [N, _room1(2, GONE)] * 13 + [N]  # (1, 3) is cell 2; no observation after the key room's 16th action
    ids += [N] * 19 + [N, ktd.OBS3 + 4]  # the empty room writes no observations; then the door room's centre
    for a, cell in itertools.zip_longest(door_actions, door_cells):
        ids += [a] if cell is None else [a, ktd.OBS3 + cell]
    return ids + [ktd.EOS]


def test_key_to_door_scores_hand_made_won_and_lost_trajectories(tasks):
    t = tasks["key-to-door"]
    won = _hand_made([N, N], [1])  # N to (1, 2), N through the door
    lost = _hand_made([S] * 15, [7] * 14)  # S to (3, 2) and into the wall until the door room ends
    assert t.score(won) == {"win": 1.0, "key": 1.0, "consistent": 1.0}
    assert t.score(lost) == {"win": 0.0, "key": 1.0, "consistent": 1.0}
    n_won = sum(ktd.ACTION0 <= i < ktd.KEY0 for i in won)
    assert n_won == ktd.SHORTEST_WIN
    assert t.log_prob(won) == pytest.approx(-2 * math.log(10) - n_won * math.log(4), rel=REL)
    assert t.log_prob(won[1:]) == t.log_prob(won)  # the leading <bos> may be left out
    wrong_obs = won.copy()
    wrong_obs[4] = _room1(12, KEY)
    assert t.score(wrong_obs)["consistent"] == 0.0 and t.log_prob(wrong_obs) == -math.inf
    assert t.log_prob(won[:-3] + [ktd.EOS]) == -math.inf  # stopped before the door
    # the same walk from the gap cell (3, 3), one step closer: true dynamics, but no episode starts there
    from_gap = won[:2] + [_room1(11, KEY)] + won[5:7] + [N, _room1(2, GONE)] + won[7:]
    assert sum(ktd.ACTION0 <= i < ktd.KEY0 for i in from_gap) == n_won
    assert t.score(from_gap)["consistent"] == 0.0 and t.log_prob(from_gap) == -math.inf


def test_key_to_door_log_prob_and_win_on_sampled_trajectories(tasks):
    t = tasks["key-to-door"]
    data = ktd.random_trajectories(80, seed=1)
    assert 0 < data.success.sum() < 80, "seed 1 must hold both wins and losses"
    for ids, success in zip(data.tokens, data.success):
        n_actions = sum(ktd.ACTION0 <= i < ktd.KEY0 for i in ids)
        assert t.log_prob(ids) == pytest.approx(-2 * math.log(10) - n_actions * math.log(4), rel=REL)
        assert t.score(ids)["win"] == float(success)
    ids = data.tokens[0]
    assert t.log_prob(ids[:-2] + [ids[-2] ^ 1, ktd.EOS]) == -math.inf  # another last action
    assert t.log_prob(ids[:-1] + [ktd.ACTION0, ktd.EOS]) == -math.inf  # an action after the end
    assert t.tokenizer.convert_ids_to_tokens([ktd.BOS, N, ktd.KEY0 + 3]) == ["<bos>", "N", "key3"]


# -- reviews --------------------------------------------------------------------------------------------------------

def _reviews_naive(words: list[str], star: int) -> float:
    """log P(text, star) by a loop over clauses: 1/5 · Π_clause Σ_c P(c | star) · 1/8 · 1/2 · P(phrase | c)."""
    clauses, cur = [], []
    for w in words:
        if w in (",", "and", "."):
            clauses.append(cur)
            cur = []
        else:
            cur.append(w)
    lp = math.log(0.2)
    for the, noun, verb, *phrase in clauses:
        assert the == "the" and noun in NOUNS and verb in VERBS
        p = sum(SENTIMENT_GIVEN_STAR[star - 1, ci] / 16 * dict(PHRASES[c]).get(tuple(phrase), 0.0)
                for ci, c in enumerate(SENTIMENTS))
        lp += math.log(p)
    return lp


def test_reviews_log_prob_matches_naive_loop(tasks):
    t = tasks["reviews"]
    for ids in t.sample(50, seed=2):
        words = t.tokenizer.convert_ids_to_tokens(ids[1:-1])
        star = STAR_TOKENS.index(words[-1]) + 1
        assert t.log_prob(ids) == pytest.approx(_reviews_naive(words[:-1], star), rel=REL)
        assert t.log_prob(ids[:-2] + ids[-1:]) == -math.inf  # no star token: not a sequence of the data
        assert t.log_prob(ids + [ids[-1]]) == -math.inf  # a second <eos>


def test_reviews_score_gives_the_exact_star_posterior(tasks):
    t = tasks["reviews"]

    def ids(text: str) -> list[int]:
        return [t.tokenizer.bos_token_id, *t.tokenizer.convert_tokens_to_ids(text.split()), t.tokenizer.eos_token_id]

    text = "the food was amazing , the staff is great and the room was not bad ."
    s = t.score(ids(text + " *2"))
    naive = np.exp([_reviews_naive(text.split(), k) for k in range(1, 6)])
    np.testing.assert_allclose([s[f"p_star_{k}"] for k in range(1, 6)], naive / naive.sum(), rtol=REL)
    assert s["map_star"] == 5.0 and s["valid"] == 1.0 and s["star"] == 2.0
    assert t.score(ids(text.replace("amazing", "awful").replace("great", "bad").replace("not bad", "terrible")
                       ))["map_star"] == 1.0
    bad = t.score(ids("the food was amazing . *5"))
    assert bad["valid"] == 0.0 and math.isnan(bad["map_star"]) and bad["star"] == 5.0

"""``add_or_sub_in_base``: the arithmetic task of SequenceMatch §6.1, written from ``methods/tasks.md`` part A.

Questions are the DeepMind mathematics module ``arithmetic__add_or_sub_in_base``: ``In base 13, what is -22a + -4?``
with the answer ``-231`` in the same base. Generation follows A.2 in its exact random-number order on one
``random.Random`` (``randint(1, 1)``, ``uniform(lo, hi)``, ``uniform(0, e)``, two ``randint(-M, M)``,
``randint(2, 16)``, ``choice([False, True])``), so a seed gives the same questions as the original generator seeded
the same way; the 160/30 length filter (A.6) is applied by rejection.

Splits (A.9, INFERRED protocol): train and test are drawn with independent seeds derived from one ``seed``; test
questions whose text appears in train are rejected. The paper used 5,000 train and 200 test questions. The entropy
range is a knob: ``"train"`` (3, 10) and ``"interpolate"`` (8, 8) are the dataset's, ``"easy"`` (3, 5.33) its
train-easy level; small CPU models in this project's benchmarks use narrower ranges (documented where used).

Format (A.9): ``<bos>`` + question + ``"\\n"`` is the prompt, the answer characters + ``<eos>`` the completion,
one character per token (:func:`arithmetic_tokenizer`). Scoring is exact match of the final answer string after
backspaces are applied.

Ground-truth noise (:func:`ground_truth_noise`, this project's construction, not the paper's, which is UNKNOWN): a
plausible wrong character for the next answer position, taken from the answer a typical mistake would produce:
a dropped carry/borrow, the opposite operation, an off-by-one digit, or a sign slip; if none of those differs from
the correct character there, a random other digit of the base.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
ENTROPY = {"train": (3.0, 10.0), "easy": (3.0, 3.0 + 7.0 / 3.0), "medium": (3.0 + 7.0 / 3.0, 3.0 + 14.0 / 3.0),
           "hard": (3.0 + 14.0 / 3.0, 10.0), "interpolate": (8.0, 8.0)}
MAX_QUESTION_LENGTH, MAX_ANSWER_LENGTH = 160, 30  # generate_settings.py (A.6)
SEPARATOR = "\n"
ALPHABET = "In base , what is ?+-" + SEPARATOR + "0123456789abcdef"


def to_base(value: int, base: int) -> str:
    """Render an integer in ``base`` (A.4): lowercase digits, leading ``-``, no prefix, ``0`` for zero.

    Example:
        >>> to_base(-75483, 10), to_base(256, 16), to_base(2, 2)
        ('-75483', '100', '10')
    """
    if not 2 <= base <= 36:
        raise ValueError(f"base must be in [2, 36], got {base}")
    if value == 0:
        return "0"
    mag, out = abs(int(value)), []
    while mag:
        mag, d = divmod(mag, base)  # integer division, never float (A.4)
        out.append(DIGITS[d])
    return ("-" if value < 0 else "") + "".join(reversed(out))


def from_base(text: str, base: int) -> int:
    """Inverse of :func:`to_base`."""
    return int(text, base)


@dataclass(frozen=True)
class Problem:
    """One question: ``p (op) q`` in ``base``; ``question`` and ``answer`` are the rendered strings."""

    p: int
    q: int
    base: int
    add: bool
    question: str
    answer: str

    @property
    def value(self) -> int:
        return self.p + self.q if self.add else self.p - self.q


def _integer(entropy: float, rng: random.Random) -> int:
    # number.integer(e, signed=True): M = ceil(10**e / 2) via a float pow, then randint(-M, M) (A.2 step 3)
    m = int(math.ceil(math.pow(10, entropy) / 2))
    return rng.randint(-m, m)


def sample_problem(rng: random.Random, entropy: tuple[float, float] = ENTROPY["train"],
                   bases: tuple[int, int] = (2, 16)) -> Problem:
    """Draw one question in the exact random-number order of the original module (A.2), length-filtered (A.6).

    Args:
        rng: the generator (Python ``random.Random``); it advances by the draws of every rejected sample too.
        entropy: ``(lo, hi)`` of the entropy draw; see ``ENTROPY``.
        bases: inclusive range of bases (2..16 in the dataset).
    """
    lo, hi = entropy
    while True:
        rng.randint(1, 1)  # num_modules, always 1, but it consumes a draw
        e = rng.uniform(lo, hi)
        e1 = max(1.0, rng.uniform(0.0, e))
        e2 = max(1.0, e - e1)
        p, q = _integer(e1, rng), _integer(e2, rng)
        base = rng.randint(bases[0], bases[1])
        add = rng.choice([False, True])
        op = "+" if add else "-"
        question = f"In base {base}, what is {to_base(p, base)} {op} {to_base(q, base)}?"
        answer = to_base(p + q if add else p - q, base)
        if len(question) <= MAX_QUESTION_LENGTH and len(answer) <= MAX_ANSWER_LENGTH:
            return Problem(p, q, base, add, question, answer)


def _entropy(level: str | tuple[float, float]) -> tuple[float, float]:
    if isinstance(level, str):
        if level not in ENTROPY:
            raise ValueError(f"unknown entropy level {level!r}; choose one of {sorted(ENTROPY)} or pass (lo, hi)")
        return ENTROPY[level]
    lo, hi = float(level[0]), float(level[1])
    if not 1.0 <= lo <= hi:
        raise ValueError(f"entropy range must satisfy 1 <= lo <= hi, got {level}; the dataset's is (3, 10)")
    return lo, hi


def make_splits(n_train: int = 5000, n_test: int = 200, seed: int = 0, *,
                train_entropy: str | tuple[float, float] = "train",
                test_entropy: str | tuple[float, float] = "interpolate",
                bases: tuple[int, int] = (2, 16)) -> tuple[list[Problem], list[Problem]]:
    """Fixed train/test splits for a seed (A.9 protocol): independent streams, test de-duplicated against train.

    Returns:
        ``(train, test)`` lists of :class:`Problem`; the same arguments always give the same lists.
    """
    if n_train < 1 or n_test < 0:
        raise ValueError(f"need n_train >= 1 and n_test >= 0, got {n_train}, {n_test}")
    if not 2 <= bases[0] <= bases[1] <= 16:
        raise ValueError(f"bases must satisfy 2 <= lo <= hi <= 16, got {bases}")
    tr_rng, te_rng = random.Random(f"arith-train-{seed}"), random.Random(f"arith-test-{seed}")
    train = [sample_problem(tr_rng, _entropy(train_entropy), bases) for _ in range(n_train)]
    seen = {p.question for p in train}
    test: list[Problem] = []
    tries = 0
    while len(test) < n_test:
        pr = sample_problem(te_rng, _entropy(test_entropy), bases)
        tries += 1
        if pr.question not in seen:
            test.append(pr)
            seen.add(pr.question)
        elif tries > 100 * max(n_test, 1):
            raise ValueError("could not draw enough test questions that are not in train; widen the entropy range")
    return train, test


def arithmetic_tokenizer(model_max_length: int = 256):
    """Character-level tokenizer for this task: ids 0..3 are ``<pad> <bos> <eos> <unk>``, then one id per character."""
    from seqlevel.presets import char_tokenizer

    return char_tokenizer(ALPHABET, model_max_length=model_max_length)


def _char_ids(tokenizer, text: str) -> list[int]:
    ids = tokenizer.convert_tokens_to_ids(list(text))
    unk = tokenizer.unk_token_id
    if unk is not None and unk in ids:
        bad = sorted({c for c, i in zip(text, ids) if i == unk})
        raise ValueError(f"characters {bad} are not in the tokenizer; build it with arithmetic_tokenizer()")
    return [int(i) for i in ids]


def encode_problem(problem: Problem, tokenizer) -> tuple[list[int], list[int]]:
    """``(prompt_ids, completion_ids)``: ``<bos>`` + question + separator, and answer + ``<eos>``."""
    prompt = [int(tokenizer.bos_token_id), *_char_ids(tokenizer, problem.question + SEPARATOR)]
    return prompt, [*_char_ids(tokenizer, problem.answer), int(tokenizer.eos_token_id)]


def to_dataset_dict(problems: Sequence[Problem], tokenizer) -> dict[str, list]:
    """Columns ``prompt_ids`` / ``completion_ids`` (and ``answer``) for ``datasets.Dataset.from_dict``."""
    pairs = [encode_problem(p, tokenizer) for p in problems]
    return {"prompt_ids": [a for a, _ in pairs], "completion_ids": [b for _, b in pairs],
            "answer": [p.answer for p in problems]}


def decode_answer(token_ids: Sequence[int], tokenizer) -> str:
    """The answer string of generated tokens (backspaces already applied), up to the first ``<eos>``."""
    out = []
    specials = set(tokenizer.all_special_ids)
    for t in token_ids:
        t = int(t)
        if t == tokenizer.eos_token_id:
            break
        if t in specials:
            continue
        out.append(tokenizer.convert_ids_to_tokens(t))
    return "".join(out)


def exact_match(predictions: Sequence[str], answers: Sequence[str]) -> float:
    """Fraction of predictions equal to the gold answer string (case-sensitive, no normalisation; A.8)."""
    if len(predictions) != len(answers):
        raise ValueError(f"got {len(predictions)} predictions for {len(answers)} answers")
    if not answers:
        raise ValueError("no answers to score")
    return sum(p == a for p, a in zip(predictions, answers)) / len(answers)


def plausible_wrong_answers(problem: Problem) -> list[str]:
    """Answers a typical mistake would give: dropped carries/borrows, the other operation, ±1, the other sign."""
    b, p, q = problem.base, problem.p, problem.q
    right = problem.value
    wrong = [_no_carry(p, q if problem.add else -q, b), (p - q) if problem.add else (p + q), right + 1, right - 1,
             -right]
    out = []
    for w in wrong:
        s = w if isinstance(w, str) else to_base(w, b)
        if s != problem.answer and s not in out:
            out.append(s)
    return out


def _no_carry(x: int, y: int, base: int) -> str:
    """``x + y`` computed digit by digit with every carry (or borrow) dropped, rendered in ``base``."""
    total = x + y
    sign = "-" if total < 0 else ""
    a, c = abs(x), abs(y)
    same = (x >= 0) == (y >= 0)
    big, small = (a, c) if a >= c else (c, a)
    digits = []
    while big or small:
        big, d1 = divmod(big, base)
        small, d2 = divmod(small, base)
        digits.append((d1 + d2) % base if same else (d1 - d2) % base)
    while len(digits) > 1 and digits[-1] == 0:
        digits.pop()
    return sign + ("".join(DIGITS[d] for d in reversed(digits)) or "0")


def ground_truth_noise(problem: Problem, tokenizer, prompt_len: int) -> Callable[[Sequence[int], int, random.Random], int]:
    """A noise source for :func:`seqlevel.backspace.augment_with_noise` that inserts plausible wrong characters.

    At answer position ``k`` (``len(prefix) - prompt_len``) it picks, uniformly, one of the plausible wrong answers
    whose character at ``k`` differs from the correct one (the digit a carry/borrow slip, the other operation, an
    off-by-one or a sign slip would write there); when none differs, a random other digit of the base (or a digit
    instead of ``<eos>``).

    Args:
        problem: the question the sequence answers.
        tokenizer: the task tokenizer (:func:`arithmetic_tokenizer`).
        prompt_len: number of prompt ids (``<bos>`` + question + separator).

    Returns:
        ``noise(prefix, target, rng) -> int``.
    """
    wrong = plausible_wrong_answers(problem)
    digits = DIGITS[: problem.base]
    correct = problem.answer
    to_id = {c: int(i) for c, i in zip(ALPHABET, tokenizer.convert_tokens_to_ids(list(ALPHABET)))}

    def noise(prefix: Sequence[int], target: int, rng: random.Random) -> int:
        k = len(prefix) - prompt_len
        want = correct[k] if 0 <= k < len(correct) else None  # None: the correct action is <eos>
        cands = sorted({w[k] for w in wrong if k < len(w) and w[k] != want})
        if not cands:
            cands = [d for d in digits if d != want] or ["1"]
        ch = cands[rng.randrange(len(cands))]
        tid = to_id[ch]
        if tid == int(target):  # cannot happen by construction, but never return the correct token
            tid = to_id[next(d for d in digits + "-" if to_id[d] != int(target))]
        return tid

    return noise


def inject_wrong_first_digit(problem: Problem, rng: random.Random) -> str:
    """A wrong first answer character for the recovery check: a plausible one when possible, else a random digit."""
    first = problem.answer[0]
    cands = sorted({w[0] for w in plausible_wrong_answers(problem) if w and w[0] != first})
    if not cands:
        cands = [d for d in DIGITS[: problem.base] if d != first]
    return cands[rng.randrange(len(cands))]


_QUESTION = re.compile(r"In base (\d+), what is (-?[0-9a-f]+) ([+-]) (-?[0-9a-f]+)\?")


def parse_question(question: str) -> Problem:
    """The :class:`Problem` of a rendered question (inverse of the template in A.3)."""
    m = _QUESTION.fullmatch(question.strip())
    if m is None:
        raise ValueError(f"not an add_or_sub_in_base question: {question!r}; expected 'In base B, what is P + Q?'")
    base, add = int(m.group(1)), m.group(3) == "+"
    p, q = from_base(m.group(2), base), from_base(m.group(4), base)
    return Problem(p, q, base, add, m.group(0), to_base(p + q if add else p - q, base))


def task_noise(tokenizer) -> Callable[[Sequence[int], int, random.Random], int]:
    """Ground-truth noise for any sequence of this task, reading the question from the live state.

    A drop-in ``noise`` for :func:`seqlevel.backspace.augment_with_noise` (and ``SequenceMatchTrainer(noise_fn=)``):
    the prefix holds ``<bos>`` + question + separator + the answer so far; the question is parsed (cached) and
    :func:`ground_truth_noise` picks the wrong character.
    """
    sep_id = int(tokenizer.convert_tokens_to_ids(SEPARATOR))
    cache: dict[tuple[int, ...], Callable] = {}

    def noise(prefix: Sequence[int], target: int, rng: random.Random) -> int:
        prefix = [int(t) for t in prefix]
        if sep_id not in prefix:
            raise ValueError("task noise needs the question and its separator in the prompt; "
                             "use prompt_len = len(<bos> + question + separator)")
        plen = prefix.index(sep_id) + 1
        key = tuple(prefix[:plen])
        if key not in cache:
            text = "".join(tokenizer.convert_ids_to_tokens([t for t in key if t != tokenizer.bos_token_id]))
            cache[key] = ground_truth_noise(parse_question(text.rstrip(SEPARATOR)), tokenizer, plen)
        return cache[key](prefix, target, rng)

    return noise


class ArithmeticTask:
    """The arithmetic task as a :class:`seqlevel.tasks.base.Task`: no tractable P, exact-match correctness as score.

    A sequence is the prompt and the completion of :func:`encode_problem` joined: ``<bos>`` question ``"\\n"``
    answer ``<eos>``, in :func:`arithmetic_tokenizer`'s ids.

    Args:
        entropy: the questions' entropy level or ``(lo, hi)`` (see ``ENTROPY``; benchmarks on CPU use ``(1, 2)``).
        bases: inclusive range of bases (2..16 in the dataset).
    """

    name = "arithmetic"
    exact_p = False

    def __init__(self, entropy: str | tuple[float, float] = "train", bases: tuple[int, int] = (2, 16)):
        self.entropy, self.bases = _entropy(entropy), bases
        self.tokenizer = arithmetic_tokenizer()

    def sample(self, n: int, seed: int = 0) -> list[list[int]]:
        """``n`` questions with their answers: the train split of :func:`make_splits` for ``seed``."""
        train, _ = make_splits(n, 0, seed, train_entropy=self.entropy, bases=self.bases)
        return [[*prompt, *completion] for prompt, completion in (encode_problem(p, self.tokenizer) for p in train)]

    def log_prob(self, ids: Sequence[int]) -> float:
        raise NotImplementedError(
            "arithmetic has no tractable P: a question comes from a continuous entropy draw with length rejection "
            "(A.2, A.6); use score() for its exact-match correctness, or a task with an exact P "
            "(markov, reviews, key-to-door)")

    def score(self, ids: Sequence[int]) -> dict[str, float]:
        """``correct``: 1 when the answer after the question's ``"\\n"`` (up to ``<eos>``) is the exact answer of the
        question in the prompt, else 0; ``valid``: 1 when the part before ``"\\n"`` is a question of the task (a
        model's free sample may not be: then both are 0). Backspaces must already be applied (this tokenizer has
        no ``<bksp>``)."""
        ids = [int(t) for t in ids]
        sep = int(self.tokenizer.convert_tokens_to_ids(SEPARATOR))
        if sep not in ids:
            return {"correct": 0.0, "valid": 0.0}
        cut = ids.index(sep)
        question = "".join(self.tokenizer.convert_ids_to_tokens([t for t in ids[:cut]
                                                                 if t != self.tokenizer.bos_token_id]))
        try:
            problem = parse_question(question)
        except ValueError:
            return {"correct": 0.0, "valid": 0.0}
        answer = decode_answer(ids[cut + 1:], self.tokenizer)
        return {"correct": float(answer == problem.answer), "valid": 1.0}

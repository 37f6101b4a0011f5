"""add_or_sub_in_base: rendering anchors of the spec, the original's random order, splits, scoring and noise."""

import random

import pytest

from seqlevel.backspace import apply_actions, augment_with_noise
from seqlevel.tasks.arithmetic import (
    ENTROPY,
    arithmetic_tokenizer,
    decode_answer,
    encode_problem,
    exact_match,
    ground_truth_noise,
    inject_wrong_first_digit,
    make_splits,
    parse_question,
    plausible_wrong_answers,
    sample_problem,
    task_noise,
    to_base,
)


@pytest.mark.parametrize("value,base,text", [(1, 10, "1"), (-1, 2, "-1"), (2, 2, "10"), (10, 16, "a"),
                                             (16, 16, "10"), (256, 16, "100"), (-75483, 10, "-75483"), (0, 7, "0")])
def test_to_base_matches_display_test_anchors(value, base, text):
    assert to_base(value, base) == text
    assert int(text, base) == value


def test_first_samples_match_the_original_generator_seed0():
    # tasks.md A.7: the original module's first train-easy sample for seed 0
    p = sample_problem(random.Random(0), ENTROPY["easy"])
    assert (p.question, p.answer) == ("In base 9, what is -20 + 278?", "258")
    assert parse_question("In base 13, what is 7a79 - -5?").answer == "7a81"  # known example (A.4)


def test_splits_are_fixed_by_seed_and_disjoint():
    a_tr, a_te = make_splits(300, 50, seed=1, train_entropy="easy", test_entropy="easy")
    b_tr, b_te = make_splits(300, 50, seed=1, train_entropy="easy", test_entropy="easy")
    c_tr, _ = make_splits(300, 50, seed=2, train_entropy="easy", test_entropy="easy")
    assert a_tr == b_tr and a_te == b_te and a_tr != c_tr
    assert not {p.question for p in a_tr} & {p.question for p in a_te}
    bases = {p.base for p in a_tr}
    assert min(bases) == 2 and max(bases) == 16
    for p in a_tr:
        assert p.answer == to_base(p.p + p.q if p.add else p.p - p.q, p.base)
        assert f"In base {p.base}, what is " in p.question and len(p.answer) <= 30


def test_tokenizer_round_trip_and_exact_match():
    tok = arithmetic_tokenizer()
    p = parse_question("In base 16, what is -ff + 1?")
    prompt, completion = encode_problem(p, tok)
    assert prompt[0] == tok.bos_token_id and completion[-1] == tok.eos_token_id
    assert decode_answer(completion, tok) == p.answer == "-fe"
    assert exact_match(["-fe", "fe", "-fe "], ["-fe"] * 3) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        exact_match([], [])


def test_ground_truth_noise_gives_plausible_wrong_characters():
    tok = arithmetic_tokenizer()
    p = parse_question("In base 10, what is 58 + 67?")  # 125; dropped carries give 15, the other op -9
    assert "15" in plausible_wrong_answers(p) and "-9" in plausible_wrong_answers(p)
    prompt, completion = encode_problem(p, tok)
    noise = ground_truth_noise(p, tok, len(prompt))
    rng = random.Random(0)
    first = {tok.convert_ids_to_tokens(noise(prompt, completion[0], rng)) for _ in range(50)}
    assert first == {"-"}  # the only plausible slip at position 0 (the other operation / the other sign)
    # task_noise reads the question from the prefix and agrees with augment_with_noise's contract
    bk = len(tok)
    for seed in range(20):
        pr, acts = augment_with_noise(prompt + completion, 0.5, task_noise(tok), 1, random.Random(seed),
                                      backspace_id=bk, prompt_len=len(prompt))
        assert apply_actions(pr, acts, bk) == prompt + completion  # noise is always undone
        # environment noise (§4.2 A): a noise token is never a target; targets are data tokens or <bksp>
        noise_tokens = [a for a, t in zip(acts, acts.targets) if a != t]
        assert all(t in completion or t == bk for t in acts.targets)
        assert len(noise_tokens) == sum(a == bk for a in acts)
    wrong = inject_wrong_first_digit(p, random.Random(0))
    assert wrong != "1" and wrong in "0123456789-"

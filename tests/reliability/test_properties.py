"""Property-based tests (hypothesis): decoding invariants, loss invariants (shift invariance where it holds, the
MLE limits, ignored positions) and the CLI's argument parsing. The encoding's own properties (apply_actions,
encode, noise augmentation) are in ``tests/backspace/test_properties.py``.

Shift invariance holds for every token-weighted loss and for behaviour cloning (all are functions of
``log_softmax``); it does not hold for SequenceMatch, whose reward ``r = Q(s, a) − γ V(s')`` moves by ``(1 − γ) c``
when every logit moves by ``c``, so it is not tested there.
"""

from __future__ import annotations

import contextlib
import io
import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from seqlevel.backspace import apply_actions, collate, encode
from seqlevel.losses import bc_loss, dft_loss, mixce_loss, mle_loss, tailr_loss

TOL = dict(rtol=1e-5, atol=1e-6)  # float32 log_softmax of shifted logits: a few ulps of the loss


def _draw(seed, B, T, V, masked):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g) * 3
    labels = torch.randint(0, V, (B, T), generator=g)
    if masked:
        labels[torch.rand(B, T, generator=g) < 0.3] = -100
        labels[0, 0] = 0  # at least one target
    return logits, labels


shapes = st.tuples(st.integers(0, 2**31 - 1), st.integers(1, 3), st.integers(1, 6), st.integers(2, 12), st.booleans())
LOSSES = {
    "mle": lambda lg, lb: mle_loss(lg, lb),
    "mixce": lambda lg, lb: mixce_loss(lg, lb, 0.3),
    "tailr": lambda lg, lb: tailr_loss(lg, lb, 0.1, 0.2),
    "dft": lambda lg, lb: dft_loss(lg, lb),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
@settings(max_examples=40, deadline=None)
@given(shape=shapes, shift=st.floats(-50, 50))
def test_token_losses_are_shift_invariant(name, shape, shift):
    logits, labels = _draw(*shape)
    per_position = torch.linspace(-1, 1, logits.shape[1])[None, :, None] * shift  # a different c per position
    f = LOSSES[name]
    torch.testing.assert_close(f(logits + per_position, labels), f(logits, labels), **TOL)


@pytest.mark.parametrize("name", sorted(LOSSES))
@settings(max_examples=30, deadline=None)
@given(shape=shapes)
def test_ignored_positions_do_not_matter(name, shape):
    logits, labels = _draw(*shape)
    assume(bool((labels == -100).any()))
    poked = logits.clone()
    poked[labels == -100] = torch.randn_like(poked[labels == -100]) * 100
    torch.testing.assert_close(LOSSES[name](poked, labels), LOSSES[name](logits, labels), **TOL)


@settings(max_examples=40, deadline=None)
@given(shape=shapes)
def test_mle_limits(shape):
    logits, labels = _draw(*shape)
    mle = mle_loss(logits, labels)
    torch.testing.assert_close(mixce_loss(logits, labels, 1.0), mle, **TOL)  # η = 1 is MLE
    torch.testing.assert_close(tailr_loss(logits, labels, 0.0), mle, **TOL)  # γ = 0 is MLE
    torch.testing.assert_close(mixce_loss(logits, labels, 0.0), dft_loss(logits, labels), **TOL)  # η = 0 is DFT
    assert float(mle) >= 0.0
    # a model that puts (almost) all mass on the labels has MLE loss → 0
    sure = torch.full_like(logits, -1e4).scatter(-1, labels.clamp(min=0)[..., None], 1e4)
    assert float(mle_loss(sure, labels)) < 1e-6


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), shift=st.floats(-30, 30),
       acts=st.lists(st.lists(st.sampled_from([4, 5, 6, 9]), min_size=1, max_size=6), min_size=1, max_size=3))
def test_behaviour_cloning_is_shift_invariant(seed, shift, acts):
    batch = collate([encode([1], a + [2], 9, eos_id=2, is_data=True, vocab_size=10) for a in acts], 0)
    logits = torch.randn(*batch["labels"].shape, 10, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(bc_loss(logits + shift, batch), bc_loss(logits, batch), **TOL)


# ---- decoding ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lm():
    from seqlevel.backspace import add_backspace_token
    from seqlevel.presets import char_tokenizer, tiny_model

    tok = char_tokenizer("abcdef")
    model = tiny_model("tiny-llama", tokenizer=tok, seed=0)
    bk = add_backspace_token(model, tok)
    return tok, model.eval(), bk


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.lists(st.integers(4, 9), min_size=1, max_size=4), seed=st.integers(0, 1000),
       temperature=st.floats(0.5, 3.0), bias=st.floats(0.0, 4.0))
def test_decoded_sequences_are_the_actions_applied(lm, prompt, seed, temperature, bias):
    from seqlevel.decoding import BiasAction, generate

    tok, model, bk = lm
    ids = torch.tensor([[tok.bos_token_id, *prompt]] * 2)
    kw = dict(max_new_actions=8, eos_token_id=tok.eos_token_id, backspace_id=bk, seed=seed, temperature=temperature,
              steer=BiasAction(bk, bias))  # a positive bias makes <bksp> frequent, also at the prompt boundary
    out = generate(model, ids, **kw)
    for p, a, s, n in zip(out.prompts, out.actions, out.sequences, out.num_actions.tolist()):
        assert len(a) == n <= 8
        assert s == apply_actions(p, a, bk)[len(p):]  # the final text is the prompt with the actions applied
        assert bk not in s
        assert out.num_backspaces.tolist() == [x.count(bk) for x in out.actions]
    again = generate(model, ids, **kw)
    assert again.actions == out.actions  # a seed fixes the rollout (resume relies on it)


# ---- CLI parsing --------------------------------------------------------------------------------------------------

def _parse(argv):
    from seqlevel.cli import _parse as parse

    return parse(argv)


BASE = ["train", "--model", "tiny-gpt2", "--dataset", "d.txt", "--output-dir", "out"]


@settings(max_examples=60, deadline=None)
@given(eta=st.floats(allow_nan=True, allow_infinity=True))
def test_cli_eta_round_trips_and_is_validated(tmp_path_factory, eta):
    from seqlevel.trainers import MixCEConfig

    args = _parse([*BASE, f"--mixce-eta={eta!r}"])  # '=' form: argparse reads "-inf" after a space as a flag
    assert args.mixce_eta == eta or (math.isnan(eta) and math.isnan(args.mixce_eta))
    out = str(tmp_path_factory.getbasetemp() / "cfg")
    if 0.0 <= eta <= 1.0:
        assert MixCEConfig(output_dir=out, mixce_eta=eta, report_to="none", use_cpu=True).mixce_eta == eta
    else:  # NaN and ±inf included: never accepted silently
        with pytest.raises(ValueError, match=r"mixce_eta must be in \[0, 1\]"):
            MixCEConfig(output_dir=out, mixce_eta=eta, report_to="none", use_cpu=True)


@settings(max_examples=40, deadline=None)
@given(steps=st.integers(-1, 10**9), bs=st.integers(1, 4096), accum=st.integers(1, 512))
def test_cli_integers_round_trip(steps, bs, accum):
    args = _parse([*BASE, "--max-steps", str(steps), "--batch-size", str(bs), "--grad-accum", str(accum)])
    # the first CLI's flags are aliases of the TrainingArguments fields they set
    assert (args.max_steps, args.per_device_train_batch_size, args.gradient_accumulation_steps) == (steps, bs, accum)


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


@settings(max_examples=40, deadline=None)
@given(junk=st.text(min_size=1, max_size=12).filter(lambda s: not _is_int(s) and not s.startswith("-")))
def test_cli_rejects_non_integer_batch_size_with_status_2(junk):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
        _parse([*BASE, "--batch-size", junk])
    assert info.value.code == 2
    assert "argument --batch-size: invalid int value" in err.getvalue()


@settings(max_examples=30, deadline=None)
@given(flag=st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=3, max_size=15).map(lambda s: "--x" + s))
def test_cli_unknown_flags_are_refused(flag):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
        _parse([*BASE, flag])
    assert info.value.code == 2 and "unrecognized arguments" in err.getvalue()

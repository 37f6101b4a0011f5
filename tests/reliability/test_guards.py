"""Numerical guards: a poisoned micro-batch (NaN logits from a forward hook), a NaN gradient (a parameter hook)
and a blown-up SequenceMatch V / CAT head output are reported with the optimizer step, the micro-batch index and
the loss term; ``nonfinite_policy="skip"`` drops them, counts them in the logs and training goes on."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from seqlevel.trainers.guards import NonFiniteError, NumericalGuardMixin, ReliabilityArgs

from . import resume_worker


def _trainer(kind, tmp_path, **args):
    tr = resume_worker.build(kind, str(tmp_path / "out"))
    tr.args.save_steps = 1000  # no checkpoint in these runs
    for k, v in args.items():
        setattr(tr.args, k, v)
    return tr


def _poison_forward(model, at_call: int):
    """Forward hook: training-mode call number ``at_call`` (0-based) returns NaN logits."""
    calls = {"n": 0}

    def hook(mod, inp, out):
        if not mod.training:
            return out
        n = calls["n"]
        calls["n"] += 1
        if n == at_call:
            out.logits = out.logits + float("nan")
        return out

    return model.register_forward_hook(hook)


class _Weights(TrainerCallback):
    def __init__(self):
        self.after = {}

    def on_step_end(self, args, state, control, model=None, **kw):
        self.after[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_nan_loss_stops_with_step_microbatch_and_term(tmp_path):
    tr = _trainer("mixce", tmp_path, max_steps=3)  # batch 2 x accumulation 2: calls 0,1 are step 1
    _poison_forward(tr.model, at_call=3)
    with pytest.raises(NonFiniteError, match=r"non-finite loss at optimizer step 2 \(global_step 1\), micro-batch "
                                             r"1 of that step, epoch .*: term mixce = nan; lower the learning rate"):
        tr.train()


def test_nan_loss_skip_policy_counts_and_leaves_weights_alone(tmp_path):
    tr = _trainer("mixce", tmp_path, max_steps=3, nonfinite_policy="skip", gradient_accumulation_steps=1)
    _poison_forward(tr.model, at_call=1)  # the only micro-batch of step 2
    rec = _Weights()
    tr.add_callback(rec)
    tr.train()
    assert tr.state.global_step == 3
    logs = [h for h in tr.state.log_history if "loss" in h]
    assert [h["nonfinite_skipped"] for h in logs] == [0, 1, 1]
    for k, v in rec.after[2].items():  # the dropped step moved nothing (no gradient: AdamW skips the parameter)
        assert torch.equal(v, rec.after[1][k]), k
    assert any(not torch.equal(v, rec.after[2][k]) for k, v in rec.after[3].items())  # step 3 trained again
    assert all(torch.isfinite(v).all() for v in tr.model.state_dict().values())


def test_partial_skip_keeps_the_rest_of_the_step(tmp_path):
    tr = _trainer("mixce", tmp_path, max_steps=2, nonfinite_policy="skip")  # accumulation 2
    _poison_forward(tr.model, at_call=2)  # micro-batch 0 of step 2; micro-batch 1 still trains
    rec = _Weights()
    tr.add_callback(rec)
    tr.train()
    assert tr.nonfinite_skipped == 1
    assert any(not torch.equal(v, rec.after[1][k]) for k, v in rec.after[2].items())


def test_nan_gradient_with_finite_loss_names_parameter_and_term(tmp_path):
    tr = _trainer("mixce", tmp_path, max_steps=2)
    wte = tr.model.transformer.wte.weight
    wte.register_hook(lambda g: g + float("nan") if tr.state.global_step == 1 else g)
    with pytest.raises(NonFiniteError, match=r"non-finite gradient at optimizer step 2 \(global_step 1\), "
                                             r"micro-batch 0 .*first in parameter 'transformer\.wte\.weight'; "
                                             r"term\(s\) with a non-finite gradient: mixce"):
        tr.train()


def test_nan_gradient_skip_drops_the_step(tmp_path):
    tr = _trainer("mixce", tmp_path, max_steps=3, nonfinite_policy="skip")
    wte = tr.model.transformer.wte.weight
    wte.register_hook(lambda g: g + float("nan") if tr.state.global_step == 1 else g)
    rec = _Weights()
    tr.add_callback(rec)
    tr.train()
    assert tr.nonfinite_skipped == 1
    for k, v in rec.after[2].items():
        assert torch.equal(v, rec.after[1][k]), k
    assert all(torch.isfinite(v).all() for v in tr.model.state_dict().values())


def test_sequencematch_value_blow_up_is_caught(tmp_path):
    tr = _trainer("sequencematch", tmp_path, max_steps=1, bc_warmup_steps=0, magnitude_limit=1e-4)
    with pytest.raises(NonFiniteError, match=r"blow-up at optimizer step 1 \(global_step 0\), micro-batch 0 .*"
                                             r"max \|V\| = [0-9.e+-]+.* exceeds magnitude_limit=0\.0001"):
        tr.train()


def test_sequencematch_nan_names_bc_and_sm_terms(tmp_path):
    tr = _trainer("sequencematch", tmp_path, max_steps=1, bc_warmup_steps=0)
    _poison_forward(tr.model, at_call=0)
    with pytest.raises(NonFiniteError, match=r"term bc = nan, sm = nan"):
        tr.train()


def test_cat_head_blow_up_is_caught_and_skip_counts(tmp_path):
    tr = _trainer("attribute", tmp_path, max_steps=1, magnitude_limit=1e-6)
    with pytest.raises(NonFiniteError, match=r"max \|attribute_head\| = .* exceeds magnitude_limit=1e-06"):
        tr.train()
    tr = _trainer("attribute", tmp_path / "b", max_steps=2, magnitude_limit=1e-6, nonfinite_policy="skip")
    tr.train()
    assert tr.nonfinite_skipped == 4  # 2 steps x 2 micro-batches, all dropped


def test_default_magnitude_limit_follows_the_dtype(tmp_path):
    tr = _trainer("mixce", tmp_path)
    assert tr._magnitude_limit(tr.model) == pytest.approx(torch.finfo(torch.float32).max / 16)
    assert tr._magnitude_limit(tr.model.to(torch.float16)) == pytest.approx(65504 / 16)
    assert tr._magnitude_limit(tr.model.to(torch.bfloat16)) == pytest.approx(torch.finfo(torch.bfloat16).max / 16)


def test_check_finite_outside_training_step_is_a_no_op(tmp_path):
    tr = _trainer("mixce", tmp_path)
    nan = torch.tensor(float("nan"))
    assert tr.check_finite(nan, {"mixce": nan}) is nan  # evaluation and by-hand calls are not guarded
    assert isinstance(tr, NumericalGuardMixin)


@pytest.mark.parametrize("field, value, message", [
    ("nonfinite_policy", "ignore", r"nonfinite_policy must be one of \('stop', 'skip'\), got 'ignore'"),
    ("magnitude_limit", 0.0, r"magnitude_limit must be > 0 \(or None for the dtype's default\), got 0.0"),
])
def test_reliability_args_are_validated(tmp_path, field, value, message):
    from seqlevel.trainers import AttributeConfig, MixCEConfig, SequenceMatchConfig

    for cfg in (MixCEConfig, SequenceMatchConfig, AttributeConfig):
        assert issubclass(cfg, ReliabilityArgs)
        with pytest.raises(ValueError, match=message):
            cfg(output_dir=str(tmp_path), report_to="none", use_cpu=True, **{field: value})

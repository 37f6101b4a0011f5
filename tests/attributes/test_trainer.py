"""AttributeTrainer: the loss equals the pure function, the three regimes train what they should, bad input fails."""

import copy

import datasets
import pytest
import torch

from seqlevel.attributes import AttributeModel
from seqlevel.losses import cat_loss
from seqlevel.trainers import AttributeConfig, AttributeTrainer

TEXTS = ["abc abc", "hello world", "xyz", "the cat sat", "a b c d e", "zzz yyy", "good", "bad bad"]
STARS = [0, 1, 2, 0, 1, 2, 2, 0]


def _cfg(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), report_to="none", max_steps=2, per_device_train_batch_size=4,
                learning_rate=1e-2, logging_steps=1, save_strategy="no", use_cpu=True, seed=0,
                disable_tqdm=True, attribute_kind="categorical", num_classes=3)
    base.update(kw)
    return AttributeConfig(**base)


def _ds(labels=STARS):
    return datasets.Dataset.from_dict({"text": TEXTS, "attribute": labels})


def test_compute_loss_equals_cat_loss(tmp_path, byte_tok, make_model):
    tr = AttributeTrainer(make_model("tiny-gpt2", tokenizer=byte_tok), args=_cfg(tmp_path), train_dataset=_ds(),
                          processing_class=byte_tok)
    batch = tr.data_collator([tr.train_dataset[i] for i in range(4)])
    m = tr.model
    got = tr.compute_loss(m, batch)
    out = m(batch["input_ids"], batch["attention_mask"], next_tokens=batch["labels"][:, 1:])
    ref = cat_loss(out.logits[:, :-1], batch["labels"][:, 1:], out.attribute, batch["attribute_labels"], "categorical")
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize("regime,consistency", [("joint", 0.0), ("joint", 0.5), ("head_only", 0.0)])
def test_regimes_train_the_right_parameters(tmp_path, byte_tok, make_model, regime, consistency):
    model = AttributeModel.for_base(make_model("tiny-llama", tokenizer=byte_tok), "categorical", 3)
    before = copy.deepcopy(model.state_dict())
    tr = AttributeTrainer(model, args=_cfg(tmp_path, regime=regime, consistency_weight=consistency),
                          train_dataset=_ds(), processing_class=byte_tok)
    out = tr.train()
    assert torch.isfinite(torch.tensor(out.training_loss))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("head.") for k in changed)
    assert any(k.startswith("base.") for k in changed) == (regime == "joint")


def test_numeric_head_trains_and_trainer_saves_head(tmp_path, byte_tok, make_model):
    args = _cfg(tmp_path, attribute_kind="numeric", save_strategy="steps", save_steps=2)
    tr = AttributeTrainer(make_model("tiny-gpt2", tokenizer=byte_tok), args=args,
                          train_dataset=_ds([float(s) * 1.5 for s in STARS]), processing_class=byte_tok)
    tr.train()
    ck = tmp_path / "out" / "checkpoint-2"
    assert (ck / "attribute_head.safetensors").is_file()
    m = AttributeModel.from_pretrained(str(ck))
    assert m.kind == "numeric"


def test_bad_input_is_refused(tmp_path, byte_tok, make_model):
    with pytest.raises(ValueError, match="integer class labels"):
        AttributeTrainer(make_model("tiny-gpt2", tokenizer=byte_tok), args=_cfg(tmp_path),
                         train_dataset=_ds([0.5] * 8), processing_class=byte_tok)
    with pytest.raises(ValueError, match="outside the head's classes"):
        AttributeTrainer(make_model("tiny-gpt2", tokenizer=byte_tok), args=_cfg(tmp_path),
                         train_dataset=_ds([3] * 8), processing_class=byte_tok)
    with pytest.raises(ValueError, match="attribute_lambda must be >= 0"):
        _cfg(tmp_path, attribute_lambda=-1.0)
    with pytest.raises(ValueError, match="no attribute column"):
        AttributeTrainer(make_model("tiny-gpt2", tokenizer=byte_tok), args=_cfg(tmp_path),
                         train_dataset=datasets.Dataset.from_dict({"text": TEXTS}), processing_class=byte_tok)


def test_evaluate_reports_token_weighted_losses_and_decision_metrics(tmp_path, byte_tok, make_model):
    """eval_lm_loss / eval_attribute_loss are token-weighted means over the whole eval set (checked against one
    pass over all sequences at once), eval_loss = lm + λ·attribute, and decision_metrics appear as eval_<name>."""
    calls = []

    def decision(model):
        calls.append(model.training)
        return {"agreement": 0.25}

    tr = AttributeTrainer(make_model("tiny-gpt2", tokenizer=byte_tok), args=_cfg(tmp_path, attribute_lambda=0.7,
                          per_device_eval_batch_size=3), train_dataset=_ds(), eval_dataset=_ds(),
                          processing_class=byte_tok, decision_metrics=decision)
    m = tr.evaluate()
    assert calls == [False] and m["eval_agreement"] == 0.25
    batch = tr.data_collator([tr.eval_dataset[i] for i in range(len(TEXTS))])
    with torch.no_grad():
        ref = tr.cat_losses(tr.model.eval(), batch)  # one batch: the token-weighted mean over everything
    assert m["eval_lm_loss"] == pytest.approx(float(ref["lm"]), rel=1e-5)
    assert m["eval_attribute_loss"] == pytest.approx(float(ref["attribute"]), rel=1e-5)
    assert m["eval_loss"] == pytest.approx(m["eval_lm_loss"] + 0.7 * m["eval_attribute_loss"], rel=1e-6)


def test_load_best_model_at_end_on_a_decision_metric(tmp_path, byte_tok, make_model):
    """With metric_for_best_model on a decision metric, training ends with the weights of the best evaluation
    (here the 2nd of 4, forced by the metric), base and head both."""
    snapshots, scores = [], iter([0.1, 0.9, 0.3, 0.2])

    def decision(model):
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"score": next(scores)}

    args = _cfg(tmp_path, max_steps=8, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
                load_best_model_at_end=True, metric_for_best_model="score", greater_is_better=True)
    tr = AttributeTrainer(make_model("tiny-gpt2", tokenizer=byte_tok), args=args, train_dataset=_ds(),
                          eval_dataset=_ds(), processing_class=byte_tok, decision_metrics=decision)
    tr.train()
    assert len(snapshots) == 4 and tr.state.best_metric == 0.9
    final = tr.model.state_dict()
    for k, v in snapshots[1].items():
        torch.testing.assert_close(final[k], v, msg=k)
    assert any(not torch.equal(final[k], v) for k, v in snapshots[3].items())


def test_evaluate_needs_something_to_evaluate(tmp_path, byte_tok, make_model):
    tr = AttributeTrainer(make_model("tiny-gpt2", tokenizer=byte_tok), args=_cfg(tmp_path), train_dataset=_ds(),
                          processing_class=byte_tok)
    with pytest.raises(ValueError, match="nothing to evaluate"):
        tr.evaluate()


def test_context_window_reaches_the_model_and_must_agree(tmp_path, byte_tok, make_model):
    tr = AttributeTrainer(make_model("tiny-gpt2", tokenizer=byte_tok), args=_cfg(tmp_path, context_window=2),
                          train_dataset=_ds(), processing_class=byte_tok)
    assert tr.model.context_window == 2
    with pytest.raises(ValueError, match="context_window"):
        AttributeTrainer(tr.model, args=_cfg(tmp_path), train_dataset=_ds(), processing_class=byte_tok)
    with pytest.raises(ValueError, match="context_window"):
        _cfg(tmp_path, context_window=0)


def test_head_learning_rate_puts_the_head_in_its_own_group(tmp_path, byte_tok, make_model):
    tr = AttributeTrainer(make_model("tiny-gpt2", tokenizer=byte_tok), args=_cfg(tmp_path, head_learning_rate=0.5,
                          learning_rate=1e-3, lr_scheduler_type="constant"), train_dataset=_ds(),
                          processing_class=byte_tok)
    tr.train()
    head = {id(p) for p in tr.model.head.parameters()}
    seen = set()
    for g in tr.optimizer.param_groups:
        ids = {id(p) for p in g["params"]}
        assert ids <= head or not ids & head  # no group mixes head and trunk
        assert g["lr"] == pytest.approx(0.5 if ids <= head else 1e-3)
        seen |= ids
    assert head <= seen and len(seen) == len({id(p) for p in tr.model.parameters() if p.requires_grad})

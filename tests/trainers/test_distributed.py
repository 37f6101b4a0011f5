"""check_distributed_setup: FSDP that would wrap nothing and batch settings that do not split get fix-it errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from seqlevel.presets import tiny_model
from seqlevel.trainers.distributed import check_distributed_setup, world_size_of


def _args(**kw):
    base = dict(per_device_train_batch_size=4, gradient_accumulation_steps=1, world_size=1, fsdp=None,
                fsdp_config=None)
    return SimpleNamespace(**{**base, **kw})


@pytest.fixture(scope="module")
def gpt2():
    return tiny_model("tiny-gpt2", seed=0)


def test_plain_single_process_and_ddp_pass(gpt2):
    check_distributed_setup(_args(), gpt2)
    check_distributed_setup(_args(), gpt2, world_size=2)


def test_fsdp_transformer_wrap_finds_blocks(gpt2):
    check_distributed_setup(_args(fsdp=True, fsdp_config={"transformer_layer_cls_to_wrap": ["GPT2Block"]}), gpt2)
    check_distributed_setup(_args(fsdp=True), gpt2)  # _no_split_modules names GPT2Block


def test_fsdp_wrong_layer_class_names_the_real_one(gpt2):
    with pytest.raises(ValueError, match=r"no module of class \['LlamaDecoderLayer'\].*GPT2Block.*DDP"):
        check_distributed_setup(_args(fsdp=True, fsdp_config={"transformer_layer_cls_to_wrap": "LlamaDecoderLayer"}),
                                gpt2)


def test_fsdp_min_num_params_too_large(gpt2):
    cfg = {"fsdp_auto_wrap_policy": "SIZE_BASED_WRAP", "fsdp_min_num_params": 10**8}
    with pytest.raises(ValueError, match=r"min_num_params=100000000 wraps nothing.*at most"):
        check_distributed_setup(_args(fsdp=True, fsdp_config=cfg), gpt2)
    biggest = max(sum(p.numel() for p in m.parameters()) for m in gpt2.modules() if m is not gpt2)
    check_distributed_setup(_args(fsdp=True, fsdp_config={**cfg, "fsdp_min_num_params": biggest}), gpt2)


def test_fsdp_model_without_layer_classes():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match="transformer_layer_cls_to_wrap.*SIZE_BASED_WRAP"):
        check_distributed_setup(_args(fsdp=True), model)
    check_distributed_setup(_args(fsdp=True, fsdp_config={"auto_wrap_policy": "NO_WRAP"}), model)


def test_fsdp_from_accelerate_env(gpt2, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "MistralDecoderLayer")
    with pytest.raises(ValueError, match="MistralDecoderLayer"):
        check_distributed_setup(_args(), gpt2)


def test_global_batch_mismatch(gpt2):
    with pytest.raises(ValueError, match=r"global_batch_size=16 .* = 24.*per_device_train_batch_size=4 with "
                                         r"gradient_accumulation_steps=2"):
        check_distributed_setup(_args(global_batch_size=16, per_device_train_batch_size=4,
                                      gradient_accumulation_steps=3), gpt2, world_size=2)
    check_distributed_setup(_args(global_batch_size=16, gradient_accumulation_steps=2), gpt2, world_size=2)


def test_rollouts_not_divisible_by_world(monkeypatch):
    with pytest.raises(ValueError, match=r"rollouts_per_refresh=5 .* 2 processes.*e\.g\. 6"):
        check_distributed_setup(_args(rollouts_per_refresh=5), None, world_size=2)
    check_distributed_setup(_args(rollouts_per_refresh=5), None, world_size=1)
    monkeypatch.setenv("WORLD_SIZE", "4")  # as torchrun sets it before the process group exists
    assert world_size_of(_args()) == 4
    with pytest.raises(ValueError, match="4 processes"):
        check_distributed_setup(_args(rollouts_per_refresh=6), None)


def test_real_training_arguments(gpt2, tmp_path):
    from seqlevel.trainers import MixCEConfig

    args = MixCEConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    check_distributed_setup(args, gpt2)


def test_mixce_trainer_runs_the_check(gpt2, tmp_path, monkeypatch):
    import datasets

    from seqlevel.presets import byte_tokenizer
    from seqlevel.trainers import MixCEConfig, MixCETrainer

    tok = byte_tokenizer()
    args = MixCEConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    ds = datasets.Dataset.from_dict({"text": ["a b c"] * 4})
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "NoSuchLayer")
    with pytest.raises(ValueError, match="NoSuchLayer"):
        MixCETrainer(model=tiny_model("tiny-gpt2", tokenizer=tok), args=args, train_dataset=ds, processing_class=tok)


def test_fsdp_attribute_model_without_layer_classes_is_refused(gpt2):
    # AttributeModel is a plain nn.Module: without _no_split_modules FSDP's transformer-based wrap finds no layer
    from seqlevel.attributes.model import AttributeModel

    model = AttributeModel.for_base(gpt2, "binary")
    if getattr(model, "_no_split_modules", None):
        check_distributed_setup(_args(fsdp=True), model)
    else:
        with pytest.raises(ValueError, match="GPT2Block"):
            check_distributed_setup(_args(fsdp=True), model)


def test_rank_share_partitions_in_order():
    from seqlevel.trainers.distributed import rank_share

    items = list(range(7))
    shares = [rank_share(items, 3, r) for r in range(3)]
    assert sum(shares, []) == items and max(map(len, shares)) - min(map(len, shares)) <= 1
    assert rank_share(items, 1, 0) == items
    with pytest.raises(ValueError, match="rank 2 of 2"):
        rank_share(items, 2, 2)


def test_sum_over_ranks_single_process_and_reduce():
    from seqlevel.trainers.distributed import sum_over_ranks

    assert sum_over_ranks(SimpleNamespace(num_processes=1), [3, 1, 0]) == [3, 1, 0]
    two = SimpleNamespace(num_processes=2, device="cpu", reduce=lambda t, reduction: t * 2)  # both ranks alike
    assert sum_over_ranks(two, [3, 1, 0]) == [6, 2, 0]

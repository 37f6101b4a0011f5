"""Checks run by every trainer before training under DDP / FSDP: fail fast with a fix, not mid-run on rank 3.

:func:`check_distributed_setup` reads the ``TrainingArguments`` (``fsdp`` / ``fsdp_config``), the environment that
``torchrun`` / ``accelerate launch`` set (``WORLD_SIZE``, ``ACCELERATE_USE_FSDP``, ``FSDP_*``) and the model:

* FSDP whose auto-wrap policy would wrap nothing: no module of the transformer-layer class (``_no_split_modules``
  or ``fsdp_config.transformer_layer_cls_to_wrap``), or ``min_num_params`` above every layer's size. The whole
  model would become one FSDP unit, so every rank gathers every weight: FSDP's memory saving is gone.
* batch settings that do not split over the ranks: a ``global_batch_size`` (when the config has one) that is not
  ``per_device_train_batch_size × world_size × gradient_accumulation_steps``, and a ``rollouts_per_refresh``
  (on-policy trainers) that the ranks cannot share equally.

Two helpers make an on-policy trainer DDP-correct: :func:`rank_share` (each rank generates its share of one
global, rank-independent draw of prompts) and :func:`sum_over_ranks` (normalise by the whole step's counts).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

_WRAP_POLICIES = ("TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP")


def world_size_of(args) -> int:
    """The number of processes: ``args.world_size`` once the process group exists, else ``$WORLD_SIZE``."""
    n = int(getattr(args, "world_size", 1) or 1)
    return max(n, int(os.environ.get("WORLD_SIZE", "1") or 1))


def _fsdp_settings(args) -> dict | None:
    """``{"policy", "layer_classes", "min_num_params"}`` when FSDP is requested (args or accelerate env), else None."""
    cfg = getattr(args, "fsdp_config", None)
    cfg = dict(cfg) if isinstance(cfg, dict) else {}
    cfg = {k[5:] if k.startswith("fsdp_") else k: v for k, v in cfg.items()}
    env_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes")
    if not getattr(args, "fsdp", None) and not env_fsdp:
        return None
    policy = cfg.get("auto_wrap_policy") or os.environ.get("FSDP_AUTO_WRAP_POLICY") or _WRAP_POLICIES[0]
    classes = cfg.get("transformer_layer_cls_to_wrap") or os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP") or None
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    min_params = int(cfg.get("min_num_params") or os.environ.get("FSDP_MIN_NUM_PARAMS") or 0)
    return {"policy": str(policy).upper(), "layer_classes": classes, "min_num_params": min_params}


def _layers(model, classes: list[str]) -> list:
    return [m for m in model.modules() if type(m).__name__ in classes]


def _block_classes(model) -> str:
    """Class names that look like repeated transformer blocks (for the hint), or a pointer to print(model)."""
    names = sorted({type(m).__name__ for m in model.modules()
                    if type(m).__name__.endswith(("Layer", "Block")) and type(m).__module__.startswith("transformers")})
    return ", ".join(names) or "see print(model)"


def _check_fsdp(args, model, world: int) -> None:
    fsdp = _fsdp_settings(args)
    if fsdp is None or model is None:
        return
    n_params = sum(p.numel() for p in model.parameters())
    ddp_hint = ("or drop FSDP for this model: DDP (configs/accelerate/ddp.yaml, no fsdp= argument) keeps a full "
                "copy per rank, which a model this size can afford")
    if fsdp["policy"] == "NO_WRAP":
        return  # the user asked for one unit on purpose
    if fsdp["policy"] == "SIZE_BASED_WRAP":
        need = fsdp["min_num_params"]
        children = [sum(p.numel() for p in m.parameters()) for m in model.modules() if m is not model]
        biggest = max(children, default=0)
        if need > 0 and biggest < need:
            raise ValueError(
                f"FSDP size-based wrapping with min_num_params={need} wraps nothing: the largest submodule of this "
                f"{n_params:,}-parameter model has {biggest:,} parameters, so the whole model would be one FSDP unit "
                f"gathered on every rank. Set fsdp_config['min_num_params'] to at most {biggest:,} (e.g. "
                f"{max(1, biggest // 2):,}), use auto_wrap_policy='TRANSFORMER_BASED_WRAP', {ddp_hint}")
        return
    classes = fsdp["layer_classes"] or list(getattr(model, "_no_split_modules", None) or [])
    if not classes:
        raise ValueError(
            f"FSDP transformer-based wrapping needs the transformer layer class, but {type(model).__name__} names "
            "none (_no_split_modules is empty) and fsdp_config has no transformer_layer_cls_to_wrap. Set "
            f"fsdp_config['transformer_layer_cls_to_wrap'] to its block class ({_block_classes(model)}), or "
            f"fsdp_config['auto_wrap_policy'] = 'SIZE_BASED_WRAP' with min_num_params, {ddp_hint}")
    if not _layers(model, classes):
        raise ValueError(
            f"FSDP would wrap no layer: the model has no module of class {classes}, so it would be a single FSDP "
            f"unit gathered on every rank. Set fsdp_config['transformer_layer_cls_to_wrap'] to the model's block "
            f"class ({_block_classes(model)}), {ddp_hint}")


def _check_batches(args, world: int) -> None:
    per_dev = int(getattr(args, "per_device_train_batch_size", 1))
    accum = int(getattr(args, "gradient_accumulation_steps", 1))
    glob = getattr(args, "global_batch_size", None)
    if glob is not None and per_dev * world * accum != int(glob):
        fits = [(b, glob // (b * world)) for b in range(1, per_dev + 1) if glob % (b * world) == 0]
        hint = (f"e.g. per_device_train_batch_size={fits[-1][0]} with gradient_accumulation_steps={fits[-1][1]}"
                if fits else f"a global_batch_size divisible by the world size {world}")
        raise ValueError(
            f"global_batch_size={glob} but per_device_train_batch_size ({per_dev}) × world size ({world}) × "
            f"gradient_accumulation_steps ({accum}) = {per_dev * world * accum}; every optimizer step sees the "
            f"latter. Choose settings whose product is {glob}: {hint}")
    rollouts = getattr(args, "rollouts_per_refresh", None)
    if rollouts is not None and world > 1 and int(rollouts) % world != 0:
        up = -(-int(rollouts) // world) * world
        raise ValueError(
            f"rollouts_per_refresh={rollouts} cannot be shared equally by {world} processes (each rank generates "
            f"its share); set it to a multiple of the world size, e.g. {up} or {max(world, up - world)}")


def rank_share(items: Sequence, world_size: int, rank: int) -> list:
    """This rank's contiguous share of ``items``; the shares of ranks ``0..world_size-1`` concatenate to ``items``.

    For on-policy generation: draw the step's global list (prompts, seeds) with a seed that does not depend on the
    rank, then generate only ``rank_share(global_list, world_size, rank)`` here (sizes differ by at most one).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need world_size >= 1 and 0 <= rank < world_size, got rank {rank} of {world_size}")
    n = len(items)
    lo, hi = rank * n // world_size, (rank + 1) * n // world_size
    return list(items[lo:hi])


def sum_over_ranks(accelerator, counts: Sequence[int], device=None) -> list[int]:
    """All-reduce (sum) integer counts over the processes of ``accelerator``; unchanged in one process.

    For losses normalised by the whole optimizer step's counts (targets, data and model sequences): each rank
    counts its own rows, and the sum is what a single process with the same global batch would divide by.
    """
    if getattr(accelerator, "num_processes", 1) <= 1:
        return [int(c) for c in counts]
    import torch

    t = torch.tensor([int(c) for c in counts], dtype=torch.long, device=device or accelerator.device)
    return [int(c) for c in accelerator.reduce(t, reduction="sum").tolist()]


def check_distributed_setup(args, model=None, world_size: int | None = None) -> None:
    """Raise a ``ValueError`` with a fix when the distributed settings cannot work as intended.

    Args:
        args: a ``TrainingArguments`` (any seqlevel config); reads ``fsdp``, ``fsdp_config``,
            ``per_device_train_batch_size``, ``gradient_accumulation_steps`` and, when present,
            ``global_batch_size`` and ``rollouts_per_refresh``.
        model: the model to be wrapped (checked for FSDP wrappability); ``None`` skips the FSDP check.
        world_size: number of processes; default :func:`world_size_of` (``args.world_size`` or ``$WORLD_SIZE``).

    Raises:
        ValueError: FSDP that would wrap nothing; batch or rollout settings that do not split over the ranks.
    """
    world = int(world_size) if world_size is not None else world_size_of(args)
    if world < 1:
        raise ValueError(f"world_size must be >= 1, got {world}")
    _check_batches(args, world)
    _check_fsdp(args, model, world)

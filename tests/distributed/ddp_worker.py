"""Worker for the 2-process CPU (gloo) tests: train a tiny model a few steps and write losses + weights.

Run as ``torchrun --nproc_per_node N ddp_worker.py OUT_DIR TRAINER PER_DEVICE_BATCH``, or directly with N = 1.
"""

import json
import os
import sys

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


def _ddp_kwargs() -> dict:
    # gloo only when actually launched with several processes; a single process must not ask for a backend
    return {"ddp_backend": "gloo"} if int(os.environ.get("WORLD_SIZE", "1")) > 1 else {}


def mixce(out_dir: str, per_device: int):
    import datasets

    from seqlevel.presets import byte_tokenizer, tiny_model
    from seqlevel.trainers import MixCEConfig, MixCETrainer

    tok = byte_tokenizer()
    model = tiny_model("tiny-gpt2", tokenizer=tok, seed=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    texts = [f"example number {i} " + "ab" * (i % 5) for i in range(16)]
    args = MixCEConfig(output_dir=os.path.join(out_dir, "run"), report_to="none", max_steps=3,
                       per_device_train_batch_size=per_device, learning_rate=1e-2, optim="sgd", logging_steps=1,
                       save_strategy="no", use_cpu=True, seed=0, mixce_eta=0.3, **_ddp_kwargs(),
                       disable_tqdm=True, dataloader_pin_memory=False)
    tr = MixCETrainer(model=model, args=args, train_dataset=datasets.Dataset.from_dict({"text": texts}),
                      processing_class=tok)
    tr.train()
    return tr, model


TRAINERS = {"mixce": mixce}


def main():
    out_dir, name, per_device = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tr, model = TRAINERS[name](out_dir, per_device)
    if tr.is_world_process_zero():
        losses = [h["loss"] for h in tr.state.log_history if "loss" in h]
        sd = {k: v.tolist() for k, v in model.state_dict().items() if k.endswith("wte.weight")}
        with open(os.path.join(out_dir, f"result-{os.environ.get('WORLD_SIZE', '1')}.json"), "w") as f:
            json.dump({"losses": losses, "weights": sd}, f)


if __name__ == "__main__":
    main()

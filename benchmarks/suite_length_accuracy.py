"""How a task's accuracy grows with the length of its task vector, fine-tuning with labels on the example suite.

The norm-mismatch must-show of DisTaC asks for teacher accuracy (minus 2 points) at the target norm. That is
only possible where a vector of about that length can carry the teacher's accuracy. This script fine-tunes a
suite task's vision tower from the suite's base with the suite's own recipe (AdamW, weight decay 0.1, cosine,
batch 64, the same held-out rows, one torch thread) for each ``STEPS:LR`` pair and prints the test accuracy
against the task-vector norm (CONDITIONING.md, "Why a stronger anchor costs accuracy").

Usage::

    hfdistac example-suite suite
    python benchmarks/suite_length_accuracy.py suite --task colour --runs 450:3e-4 1800:3e-4 450:1e-3 450:3e-3
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("suite", help="a built example suite")
    ap.add_argument("--task", default="colour", help="suite task (default colour)")
    ap.add_argument("--runs", nargs="+", default=["450:3e-4", "900:3e-4", "1800:3e-4", "450:1e-3", "450:3e-3",
                                                  "450:6e-3"], help="STEPS:LR pairs (default: a length sweep)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import numpy as np
    import torch

    from hfdistac.checkpoints import build_vision_model, load_base, read_vision_weights
    from hfdistac.data import DatasetSpec, load_image_data
    from hfdistac.evaluation import head_for_task
    from hfdistac.example_suite.build import _processed
    from hfdistac.example_suite.training import finetune_vision, predict_logits, vision_params
    from hfdistac.metrics import top1_accuracy as accuracy

    torch.set_num_threads(1)
    suite = Path(args.suite)
    fig = json.loads((suite / "suite.json").read_text())
    plan = fig["plan"]
    n_val = max(1, int(round(plan["val_fraction"] * plan["n_train"])))  # held out from fine-tuning, as the build
    base = load_base(str(suite / "base"))
    train = load_image_data(DatasetSpec(str(suite / "data" / args.task)), "train")
    test = load_image_data(DatasetSpec(str(suite / "data" / args.task)), "test")
    head = head_for_task(base, train)

    def pixels(d):
        return _processed(base.image_processor,
                          np.stack([np.asarray(im.convert("RGB")) for im in d.dataset[d.image_column]]))

    x_tr, y_tr = pixels(train)[n_val:], torch.tensor(train.dataset[train.label_column])[n_val:]
    x_te, y_te = pixels(test), torch.tensor(test.dataset[test.label_column])
    theta0 = read_vision_weights(suite / "base")
    teacher = fig["tasks"][args.task]
    print(f"## {args.task}: test accuracy against task-vector norm (fine-tuned with labels, batch "
          f"{plan['finetune_batch']})\n")
    print(f"suite: standard {teacher['standard']['accuracy']:.1f} % at {teacher['standard']['norm']:.2f}, "
          f"high-LR {teacher['highlr']['accuracy']:.1f} % at {teacher['highlr']['norm']:.2f}\n")
    print("| steps | lr | ‖τ‖ | test accuracy | seconds |")
    print("|--:|--:|--:|--:|--:|")
    for run in args.runs:
        steps, lr = run.split(":")
        vm = build_vision_model(base.vision_config, theta0)
        t0 = time.perf_counter()
        finetune_vision(vm, head, x_tr, y_tr, steps=int(steps), batch_size=plan["finetune_batch"], lr=float(lr),
                        seed=0, progress=False)
        w = vision_params(vm)
        norm = float(sum((w[k] - theta0[k]).double().pow(2).sum() for k in theta0) ** 0.5)
        acc = accuracy(predict_logits(vm, head, x_te), y_te)
        print(f"| {steps} | {float(lr):g} | {norm:.2f} | {acc:.1f} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()

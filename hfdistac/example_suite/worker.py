"""Fine-tuning jobs of the example-suite build, run inline or in worker processes.

The build writes the base vision tower (safetensors), the training tensors (safetensors) and a JSON list of
jobs into a work directory; ``python -m hfdistac.example_suite.worker WORKDIR INDEX COUNT`` runs every
``COUNT``-th job starting at ``INDEX``. Each job saves its model where the suite wants it and its test logits
as ``logits/<job>.safetensors`` (written under a temporary name, then renamed: the file's presence means the
job is done). Nothing is pickled, and the worker needs no ``if __name__ == "__main__"`` guard in the
caller's script (which ``multiprocessing``'s spawn start method would).

Every job uses one torch thread and its own seed, so a model does not depend on which process trained it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

JOBS_FILE = "jobs.json"
TENSORS_FILE = "tensors.safetensors"
BASE_DIR = "base_vision"


def job_logits_path(workdir: Path, key: str) -> Path:
    """Where the job ``key`` leaves its test logits."""
    return workdir / "logits" / f"{key.replace('/', '__')}.safetensors"


def run_job(workdir: Path, job: dict[str, Any], spec: dict[str, Any], tensors: dict[str, torch.Tensor],
            progress: bool = False) -> None:
    """Fine-tune one model variant, save it and its test logits."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionModel

    from ..heads import Head
    from ..runtime import torch_state
    from .files import save_vision_model
    from .training import finetune_vision, predict_logits

    task = job["task"]
    head = Head(weight=tensors[f"{task}.head_weight"], projection=tensors["head_projection"],
                logit_scale=float(spec["logit_scale"]), class_names=list(job["classes"]), templates=[])
    with torch_state(threads=1):
        vm = CLIPVisionModel.from_pretrained(workdir / BASE_DIR)
        finetune_vision(vm, head, tensors[f"{task}.x"], tensors[f"{task}.y"], steps=job["steps"],
                        batch_size=job["batch_size"], lr=job["lr"], seed=job["seed"],
                        label_smoothing=job["label_smoothing"], desc=job["key"], progress=progress)
        logits = predict_logits(vm, head, tensors[f"{task}.x_test"])
    save_vision_model(vm, Path(job["output"]))
    out = job_logits_path(workdir, job["key"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp-{os.getpid()}")
    save_file({"logits": logits.contiguous()}, str(tmp))
    os.replace(tmp, out)


def load_work(workdir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The job list and the tensors a build wrote into ``workdir``."""
    from safetensors.torch import load_file

    spec = json.loads((workdir / JOBS_FILE).read_text(encoding="utf-8"))
    return spec, load_file(str(workdir / TENSORS_FILE))


def main(argv: list[str] | None = None) -> int:
    """Entry point of a worker process: ``WORKDIR INDEX COUNT``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        sys.stderr.write("usage: python -m hfdistac.example_suite.worker WORKDIR INDEX COUNT\n")
        return 2
    workdir, index, count = Path(args[0]), int(args[1]), int(args[2])
    from transformers.utils import logging as hf_logging

    from ..runtime import tune_allocator

    tune_allocator()  # a process of hfdistac's own, as the command line's
    hf_logging.disable_progress_bar()
    spec, tensors = load_work(workdir)
    for job in spec["jobs"][index::count]:
        run_job(workdir, job, spec, tensors)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

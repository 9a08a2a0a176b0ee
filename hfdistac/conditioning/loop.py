"""The DisTaC run: one accelerate loop, readable top to bottom (``hfdistac condition``).

:func:`run_condition` resolves the inputs (:mod:`.inputs`), builds the frozen teacher θ₀ + τ and the student
θ_init = θ₀ + κτ around the same frozen zero-shot head, caches the teacher's logits once when the training
set is finite and read more than once, and then trains as the accelerate examples do::

    prepare → for each step: accumulate micro-batches (forward, KD loss, backward) → clip → step → schedule

The anchor β‖θ − θ_init‖² depends on θ only, so it is added once per optimiser step, on the last micro-batch.
Every process reads its own contiguous slice of each *global* batch (:func:`~.algorithm.global_batch_indices`),
so one process and W processes see the same data, and a resumed run finds its place from the step number.
The main process writes the output (:mod:`.outputs`) and, with ``--push-to``, publishes it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from ..errors import InputError, TrainingError
from ..hub.resolve import resolving_once
from ..metrics import entropy as prediction_entropy
from .algorithm import (
    cosine_with_warmup,
    distillation_loss,
    effective_warmup,
    global_batch_indices,
    project_to_ball,
    task_vector_norm,
)
from .checkpointing import (
    TRAINING_KEYS,
    CorruptCheckpoint,
    all_checkpoints,
    checkpoint_fingerprint,
    load_checkpoint,
    remove_checkpoints,
    save_checkpoint,
)
from .config import ConditionConfig
from .images import ImageStore, sharded_logits
from .inputs import Inputs, choose_preset, resolve_inputs

logger = logging.getLogger(__name__)


def make_accelerator(config: ConditionConfig):
    """A fresh ``Accelerator`` for one run (CPU or GPU, mixed precision, trackers)."""
    from pathlib import Path

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from ..evaluation import resolve_device

    device = resolve_device(config.device)
    if config.mixed_precision == "fp16" and device.type != "cuda":
        raise InputError("--mixed-precision fp16 needs a GPU", "use bf16 on CPU, or no")
    # A library call may run several times in one Python process with different settings: start from a
    # fresh accelerate state (the distributed process group, if any, is kept).
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    log_with = None if config.report_to in ("", "none") else [t.strip() for t in config.report_to.split(",")]
    project_dir = str(Path(config.output).with_name(Path(config.output).name + ".runs")) if log_with else None
    # step_scheduler_with_optimizer=False: we call scheduler.step() exactly once per optimiser step; the
    # default would step it once per process, which assumes a per-process batch and shortens the schedule.
    return Accelerator(cpu=device.type == "cpu", mixed_precision=config.mixed_precision, log_with=log_with,
                       project_dir=project_dir, step_scheduler_with_optimizer=False)


class _Evaluator:
    """Accuracy/entropy/ECE of a classifier on the run's evaluation split (``None`` without one)."""

    def __init__(self, inputs: Inputs, accelerator, budget: float):
        self.accelerator, self.config = accelerator, inputs.config
        self.store = self.indices = self.labels = None
        if inputs.eval is None:
            return
        ds = inputs.eval.dataset
        n_eval = len(ds) if self.config.eval_limit is None else min(len(ds), self.config.eval_limit)
        ds = ds.select(range(n_eval))
        self.store = ImageStore(ds, inputs.base.image_processor, inputs.eval.image_column, budget, inputs.eval.spec,
                                inputs.eval.split)
        self.indices = list(range(n_eval))
        if inputs.eval.label_column is not None:
            self.labels = torch.tensor([int(v) for v in ds[inputs.eval.label_column]])
        self.spec, self.split = inputs.eval.spec, inputs.eval.split

    def __call__(self, classifier, num_classes: int) -> dict | None:
        from ..data import check_labels
        from ..evaluation import metrics_with_reliability

        if self.store is None:
            return None
        if self.labels is not None:
            check_labels(self.labels, num_classes, self.spec, self.split)
        logits = sharded_logits(classifier, self.store, self.indices, self.config.eval_batch_size, self.accelerator,
                                num_classes, self.config.num_workers)
        return metrics_with_reliability(logits, self.labels)


@dataclass
class _Setup:
    """The models and settings of a run, as resolved before the first step."""

    config: ConditionConfig  # resolved: preset, temperatures, warm-up and micro batch filled in
    preset: str
    kappa: float
    target_norm: float
    diagnosis: dict | None
    teacher: Any  # None once its logits are cached
    teacher_logits: torch.Tensor | None
    student: Any
    train_store: ImageStore
    names: list[str]
    anchor: dict[str, torch.Tensor]
    theta0_cpu: Any  # θ₀ (a lazy mapping: tensors are read from the base checkpoint when indexed)
    theta0_dev: dict[str, torch.Tensor] | None
    radius: float | None
    accumulation: int
    evaluate: _Evaluator
    num_classes: int
    metrics: dict[str, dict | None]  # teacher ("before") and naive rescaling ("rescaled_only")
    clock: tuple[float, float]  # wall and CPU time when the teacher-logit cache started
    cache_seconds: float


def _layout(config: ConditionConfig, world: int) -> tuple[int, int]:
    """``(micro batch per process, gradient-accumulation steps)`` of the global batch."""
    micro = config.micro_batch_size or config.batch_size // world
    if config.batch_size % (micro * world):
        raise InputError(f"--batch-size {config.batch_size} is not a multiple of micro batch {micro} x {world} "
                         "processes", "choose --batch-size and --micro-batch-size so that it divides evenly")
    return micro, config.batch_size // (micro * world)


def _set_up(inputs: Inputs, accelerator) -> _Setup:
    """Head, teacher θ₀ + τ (frozen), κ and temperatures, student θ_init = θ₀ + κτ, teacher-logit cache."""
    from accelerate.utils import set_seed

    from ..checkpoints import build_vision_model
    from ..evaluation import check_head_matches, head_for_task
    from ..heads import ZeroShotClassifier
    from ..task_vectors import apply_task_vector

    cfg = inputs.config
    micro, accumulation = _layout(cfg, accelerator.num_processes)
    set_seed(cfg.seed)
    with accelerator.main_process_first():  # one process builds and caches the head, the others read it
        head = head_for_task(inputs.base, inputs.head_data or inputs.train, templates=inputs.templates)
    inputs.base.release_text_tower()  # θ₀ is in inputs.theta0; the text tower was needed for the head only
    if inputs.eval is not None:
        check_head_matches(head, inputs.eval)
    budget = cfg.cache_images_gb * 2**30
    train_store = ImageStore(inputs.train.dataset, inputs.base.image_processor, inputs.train.image_column, budget,
                             inputs.train.spec, inputs.train.split)
    evaluate = _Evaluator(inputs, accelerator, budget)

    # Teacher θ₀ + τ: frozen, in eval mode, never in the optimiser.
    vcfg = inputs.base.vision_config
    teacher = ZeroShotClassifier(build_vision_model(vcfg, inputs.source.weights), head).to(accelerator.device)
    teacher.requires_grad_(False).eval()
    inputs.source.weights = {}  # the teacher holds θ_t now
    teacher_metrics = evaluate(teacher, head.num_classes)
    preset, kappa, t_tcr, t_stu, diagnosis = choose_preset(cfg, inputs.norm, inputs.reference_norms,
                                                           teacher_metrics, head.num_classes)
    resolved = replace(cfg, preset=preset, teacher_temperature=t_tcr, student_temperature=t_stu,
                       warmup_steps=effective_warmup(cfg.steps, cfg.warmup_steps), micro_batch_size=micro)
    logger.info("DisTaC: preset %s, κ=%.4g (‖τ‖ %.4g → %.4g), T=(%g, %g), %d processes x %d micro x %d accumulation",
                preset, kappa, inputs.norm, kappa * inputs.norm, t_tcr, t_stu, accelerator.num_processes, micro,
                accumulation)

    # Student θ_init = θ₀ + κτ; the anchor is the same point, paired by parameter name.
    theta_init = apply_task_vector(inputs.theta0, inputs.tau, kappa)
    from ..task_vectors import per_layer_norms

    inputs.tau_layer_norms, inputs.tau = per_layer_norms(inputs.tau), None  # τ is not needed any more
    student = ZeroShotClassifier(build_vision_model(vcfg, theta_init), head)
    rescaled_metrics = evaluate(student.to(accelerator.device), head.num_classes)
    names = [f"vision_model.{k}" for k, _ in student.vision_model.named_parameters()]
    radius = None if cfg.max_norm_ratio is None else cfg.max_norm_ratio * kappa * inputs.norm

    # Caching pays when the run reads at least as many images as the set holds (several epochs, the usual
    # case: 500 x 128 = 64,000 reads); on a set larger than that it would do more teacher work, not less.
    n_train = train_store.num_examples
    use_cache = cfg.cache_teacher_logits if cfg.cache_teacher_logits is not None else \
        n_train <= cfg.steps * cfg.batch_size
    teacher_logits, clock = None, (time.perf_counter(), time.process_time())
    if use_cache:
        teacher_logits = sharded_logits(teacher, train_store, range(n_train), cfg.eval_batch_size, accelerator,
                                        head.num_classes, cfg.num_workers).to(accelerator.device)
        teacher = None  # its logits are all we need from now on
    return _Setup(resolved, preset, kappa, kappa * inputs.norm, diagnosis, teacher, teacher_logits, student,
                  train_store, names, {n: theta_init[n].to(accelerator.device) for n in names},
                  inputs.theta0,  # lazy: read tensor by tensor for the logged norms
                  None if radius is None else {n: inputs.theta0[n].to(accelerator.device) for n in names},
                  radius, accumulation, evaluate, head.num_classes,
                  {"before": teacher_metrics, "rescaled_only": rescaled_metrics}, clock, time.perf_counter() - clock[0])


def _accumulate_gradients(setup: _Setup, accelerator, student, params_by_name, indices: list[int]
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward, loss and backward over this process's micro-batches of one optimiser step.

    The anchor β‖θ − θ_init‖² depends on θ only: its value is computed once per step and its gradient
    2β(θ − θ_init) added to the gradients after the last micro-batch's backward pass (:func:`_add_anchor_gradient`)
    rather than through autograd, which would hold that gradient for every parameter while the KD gradients
    are still being computed (one more copy of the tower).

    Returns:
        ``(mean KD loss, anchor term, mean student entropy)`` of this process (detached).
    """
    cfg, micro = setup.config, setup.config.micro_batch_size
    kd_sum = entropy_sum = torch.zeros((), device=accelerator.device)
    for m in range(setup.accumulation):
        idx = indices[m * micro:(m + 1) * micro]
        pixels = setup.train_store(idx).to(accelerator.device)
        if setup.teacher_logits is not None:
            z_tcr = setup.teacher_logits[torch.as_tensor(idx, device=setup.teacher_logits.device)]
        else:
            with torch.no_grad(), accelerator.autocast():
                z_tcr = setup.teacher(pixels).float()
        last = m == setup.accumulation - 1
        # One process: the earlier micro-batches' gradients are set aside during the last backward pass and
        # added after it, so the sums are formed in the order autograd would form them with the anchor in the
        # loss. Several processes: the sum must stay in .grad for the all-reduce.
        stash = [p.grad for p in params_by_name.values()] if last and accelerator.num_processes == 1 \
            and setup.accumulation > 1 else None
        if stash is not None:
            for p in params_by_name.values():
                p.grad = None
        # Gradients are averaged over processes only once, on the last micro-batch.
        with accelerator.no_sync(student) if not last else contextlib.nullcontext():
            z_stu = student(pixels)
            kd = distillation_loss(z_stu, z_tcr, cfg.teacher_temperature, cfg.student_temperature)
            accelerator.backward(kd / setup.accumulation)
        if last:
            anchor_term = _add_anchor_gradient(params_by_name, setup.anchor, cfg.beta, stash, accelerator)
        kd_sum = kd_sum + kd.detach() / setup.accumulation
        entropy_sum = entropy_sum + prediction_entropy(z_stu.detach()).mean() / setup.accumulation
    return kd_sum, anchor_term.detach(), entropy_sum


@torch.no_grad()
def _add_anchor_gradient(params_by_name, anchor, beta: float, stash: list | None, accelerator) -> torch.Tensor:
    """grad += 2β(θ − θ_init) for every parameter, one at a time (then the set-aside gradients, if any); returns
    the anchor's value ‖θ − θ_init‖² (:func:`~hfdistac.conditioning.algorithm.anchor_penalty`, up to summation
    order).

    One difference d = θ − θ_init per parameter serves both: its squared norm (a dot product, no temporary) and
    the gradient (added with ``alpha``, no temporary): three passes over a parameter instead of seven, 0.2 s
    instead of 0.7 s a step at ViT-B/32 on one CPU thread. In float32; with an fp16 loss scaler the term is
    scaled like the KD gradients it joins.
    """
    scale = accelerator.scaler.get_scale() if getattr(accelerator, "scaler", None) is not None else 1.0
    total = None
    for i, (name, p) in enumerate(params_by_name.items()):
        d = p - anchor[name].to(p.dtype)
        flat = d.reshape(-1)
        term = torch.dot(flat, flat)
        total = term if total is None else total + term
        if p.grad is None:
            p.grad = d.mul_(2 * beta * scale)
        else:
            p.grad.add_(d, alpha=2 * beta * scale)
        if stash is not None and stash[i] is not None:
            p.grad = stash[i].add_(p.grad)
    return total if total is not None else torch.zeros(())


def _adamw(params, cfg: ConditionConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused on CPU and CUDA: one pass over each parameter per step instead of about ten. At ViT-B/32 on
    one CPU thread that is 0.14 s instead of 0.80 s a step (CONDITIONING.md, "At ViT-B/32 size"); the update is
    the same formula (the final weights agree with the unfused optimiser to float rounding)."""
    params = list(params)
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        except (RuntimeError, ValueError):  # a torch build without the fused kernel for this device
            pass
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _train(setup: _Setup, inputs: Inputs, accelerator) -> dict[str, Any]:
    """The optimisation loop: prepare, then per step accumulate → check → clip → step → project → schedule."""
    from tqdm.auto import tqdm

    cfg = setup.config
    world, rank = accelerator.num_processes, accelerator.process_index
    optimizer = _adamw(setup.student.vision_model.parameters(), cfg, accelerator.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(cosine_with_warmup, total=cfg.steps, warmup=cfg.warmup_steps))
    student, optimizer, scheduler = accelerator.prepare(setup.student, optimizer, scheduler)
    params = [p for _, p in accelerator.unwrap_model(student).vision_model.named_parameters()]
    params_by_name = dict(zip(setup.names, params, strict=True))
    n_train = setup.train_store.num_examples
    fingerprint = checkpoint_fingerprint({**{k: getattr(cfg, k) for k in TRAINING_KEYS}, "kappa": setup.kappa,
                                          "source": inputs.source.resolved.revision,
                                          "base": inputs.base.resolved.revision, "data": cfg.data,
                                          "data_revision": inputs.train.revision,
                                          "n_train": n_train, "cache": setup.teacher_logits is not None})
    start_step, history, projected_steps = _resume(cfg, inputs, accelerator, setup.names, params, optimizer,
                                                   scheduler, fingerprint)
    if accelerator.log_with:
        accelerator.init_trackers("hfdistac-condition", config={k: v for k, v in asdict(cfg).items()
                                                               if isinstance(v, (int, float, str, bool))})
    per_rank = cfg.batch_size // world
    student.train()
    bar = tqdm(total=cfg.steps, initial=start_step, desc="DisTaC", unit="step", dynamic_ncols=True,
               disable=not (cfg.progress and accelerator.is_main_process))
    for step in range(start_step, cfg.steps):
        # This process's slice of the global batch, in `accumulation` micro-batches.
        indices = global_batch_indices(n_train, cfg.batch_size, step, cfg.seed)[rank * per_rank:(rank + 1) * per_rank]
        kd_sum, anchor_term, entropy_sum = _accumulate_gradients(setup, accelerator, student, params_by_name,
                                                                 indices)
        kd_mean = accelerator.reduce(kd_sum, "mean")
        total = kd_mean + cfg.beta * anchor_term
        if not torch.isfinite(total):
            bar.close()
            raise TrainingError(f"non-finite loss at step {step + 1} (KD {float(kd_mean):.4g}, anchor "
                                f"{float(anchor_term):.4g}); nothing was written",
                                "lower --lr, check the temperatures, or use --mixed-precision no")
        grad_norm = accelerator.clip_grad_norm_(student.parameters(), cfg.max_grad_norm) \
            if cfg.max_grad_norm > 0 else None
        optimizer.step()
        # Every process holds the same θ after the step, so every process projects identically.
        if setup.radius is not None and project_to_ball(params_by_name, setup.theta0_dev, setup.radius) is not None:
            projected_steps += 1
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps or done == 1:
            norm_now = task_vector_norm(params_by_name, setup.theta0_dev or setup.theta0_cpu)
            record = {"step": done, "kd_loss": float(kd_mean), "anchor": float(anchor_term), "loss": float(total),
                      "norm": norm_now, "norm_ratio": norm_now / setup.target_norm,
                      "entropy": float(accelerator.reduce(entropy_sum, "mean")),
                      "lr": float(scheduler.get_last_lr()[0]),
                      "grad_norm": None if grad_norm is None else float(grad_norm), "projected_steps": projected_steps}
            history.append(record)
            bar.set_postfix(kd=f"{record['kd_loss']:.4f}", norm=f"{record['norm_ratio']:.3f}")
            if accelerator.log_with:
                accelerator.log({k: v for k, v in record.items() if v is not None and k != "step"}, step=done)
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            save_checkpoint(inputs.checkpoint_dir, done, accelerator, setup.names, params, optimizer, scheduler,
                            history, fingerprint, projected_steps)
    bar.close()
    if accelerator.log_with:
        accelerator.end_training()
    steps_run = cfg.steps - start_step
    elapsed = time.perf_counter() - setup.clock[0]  # teacher-logit cache + training
    timing = {"teacher_cache_s": setup.cache_seconds, "train_s": elapsed - setup.cache_seconds,
              "cpu_s": time.process_time() - setup.clock[1], "steps_run": steps_run,
              "steps_per_s": steps_run / elapsed if steps_run else None,
              "images_per_s": steps_run * cfg.batch_size / elapsed if steps_run else None,
              "peak_device_memory_mb": torch.cuda.max_memory_allocated(accelerator.device) / 2**20
              if accelerator.device.type == "cuda" else None}  # this process's
    return {"student": student, "params_by_name": params_by_name, "history": history,
            "projected_steps": projected_steps, "timing": timing}


def _resume(cfg: ConditionConfig, inputs: Inputs, accelerator, names, params, optimizer, scheduler,
            fingerprint: str) -> tuple[int, list[dict], int]:
    """``(start step, history, projected steps)``: from the latest checkpoint with ``--resume``, else a fresh start."""
    if cfg.resume:
        found = all_checkpoints(inputs.checkpoint_dir)
        if not found:
            logger.warning("--resume: no checkpoint in %s, starting from step 0", inputs.checkpoint_dir)
            return 0, [], 0
        for path in found:  # newest first; a checkpoint hfdistac wrote that cannot be read is passed over
            try:
                state = load_checkpoint(path, accelerator, names, params, optimizer, scheduler, fingerprint)
            except CorruptCheckpoint as e:
                logger.warning("--resume: the checkpoint %s cannot be read (%s); trying an earlier one", path, e)
                continue
            logger.info("resumed from %s (step %d)", path, state[0])
            return state
        logger.warning("--resume: no checkpoint in %s can be read; starting from step 0", inputs.checkpoint_dir)
        return 0, [], 0
    if accelerator.is_main_process and inputs.checkpoint_dir.exists() and cfg.checkpoint_every:
        remove_checkpoints(inputs.checkpoint_dir)  # stale, and hfdistac's (only reachable with --overwrite)
    return 0, [], 0


@resolving_once()
def run_condition(config: ConditionConfig) -> dict:
    """Condition one task vector with DisTaC and write the output directory (``hfdistac condition``).

    Works unchanged in one process and under ``accelerate launch`` / ``torchrun`` with several: every process
    trains on its own slice of each global batch; the main process writes the output.

    Args:
        config: A :class:`ConditionConfig`.

    Returns:
        The report (also written to ``OUTPUT/report.json``): κ, target and actual norms, temperatures, β,
        steps, entropy/accuracy/ECE of the teacher (``*_before``), of the naive rescaling θ₀ + κτ
        (``*_rescaled_only``) and of the result (``*_after``), ``history``, ``ranks``, ``output`` and, with
        ``--push-to``, ``pushed``.

    Raises:
        InputError, DataError, CheckpointError: bad input (nothing is written).
        TrainingError: a non-finite loss, or a diverged result (non-finite or > 10x the longer of ‖τ‖ and the
            target norm); nothing is written.
        OutputError: the output location cannot be written (checked before training).
    """
    from ..runtime import apply_thread_policy

    apply_thread_policy()  # the command line's thread default, once per process
    from ..outputs import OutputLock, check_destination

    inputs = resolve_inputs(config)
    accelerator = make_accelerator(inputs.config)
    main = accelerator.is_main_process
    with OutputLock(inputs.output) if main else contextlib.nullcontext():
        if main:  # another run may have finished writing it since resolve_inputs looked
            check_destination(inputs.output, inputs.config.overwrite)
        setup = _set_up(inputs, accelerator)
        trained = _train(setup, inputs, accelerator)
        report = _finish(setup, trained, inputs, accelerator)
    cfg = setup.config
    if cfg.push_to and main:
        from ..hub import push_folder

        report["pushed"] = push_folder(inputs.output, cfg.push_to, private=cfg.private, revision=cfg.revision,
                                       create_pr=cfg.create_pr, commit_message=cfg.commit_message)
    return report


def _finish(setup: _Setup, trained: dict[str, Any], inputs: Inputs, accelerator) -> dict:
    """Evaluate the result, check it, build the report and (main process) write the output directory."""
    from .outputs import build_report, write_output

    student = trained["student"]
    accelerator.free_memory()  # the optimizer's moments (2 copies of the tower) and gradients are not needed now
    cached = setup.teacher_logits is not None
    setup.anchor = setup.teacher_logits = setup.teacher = None
    student.eval()
    final_metrics = setup.evaluate(accelerator.unwrap_model(student), setup.num_classes)
    ranks = accelerator.gather(torch.tensor([accelerator.process_index], device=accelerator.device)).cpu().tolist()
    # the trained parameters themselves (a CPU copy only when they live on a GPU)
    theta = {n: p.detach().float().cpu() for n, p in trained["params_by_name"].items()}
    metrics = {**setup.metrics, "after": final_metrics}
    report = build_report(inputs, setup.config, setup.kappa, setup.target_norm, theta, metrics, trained["history"],
                          setup.diagnosis, ranks, setup.accumulation, cached,
                          trained["projected_steps"] if setup.radius is not None else None)
    check_result(report, setup.config)
    ratio = report["norm_after_over_target"]
    if setup.radius is None and setup.preset in ("norm", "both") and abs(ratio - 1) > 0.15 \
            and accelerator.is_main_process:
        logger.warning("the conditioned task vector ends at %.2fx the target norm (the paper reports ~1.1x); "
                       "to keep it closer, raise --beta or bound it with --max-norm-ratio 1.15 (hfdistac extension)",
                       ratio)
    report["timing"] = trained["timing"]
    report["history"] = report.pop("history")  # keep the long list last
    if accelerator.is_main_process:
        write_output(inputs, setup.config, report, theta, metrics)
        if setup.config.checkpoint_every:
            remove_checkpoints(inputs.checkpoint_dir)
    accelerator.wait_for_everyone()
    return report


#: A conditioned task vector longer than this multiple of the longer of ‖τ‖ and the target norm is a diverged
#: run, not a result: the anchor pulls θ towards θ_init = θ₀ + κτ, and the paper reports ≈1.1x the target.
MAX_NORM_GROWTH = 10.0


def check_result(report: dict, config: ConditionConfig) -> None:
    """Refuse to save a diverged run: a non-finite or absurdly long conditioned task vector.

    Raises:
        TrainingError: naming the norm reached and how to avoid it (nothing is written).
    """
    norm, limit = report["norm_after"], MAX_NORM_GROWTH * max(report["norm_before"], report["target_norm"])
    if not math.isfinite(norm) or norm > limit:
        raise TrainingError(f"the conditioned task vector diverged: its norm is {norm:.4g}, "
                            f"{norm / report['target_norm']:.3g}x the target {report['target_norm']:.4g} "
                            f"(more than {MAX_NORM_GROWTH:g}x the longer of ‖τ‖ and the target); nothing was written",
                            f"lower --lr (got {config.lr:g}; the paper uses the fine-tuning rate, 1e-5 for "
                            "ViT-B/32), or bound the norm with --max-norm-ratio")

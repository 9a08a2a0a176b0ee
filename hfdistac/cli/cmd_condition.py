"""``hfdistac condition``: pre-condition one task vector with DisTaC (the CLI only parses and prints)."""

from __future__ import annotations

from ..conditioning.config import ConditionConfig
from .main import Command, is_main_process

EXAMPLES = """\
  # norm mismatch: shrink a long task vector to the mean norm of the other tasks, temperatures (10, 10)
  hfdistac condition tanganke/clip-vit-base-patch32_svhn --base openai/clip-vit-base-patch32 \\
      --data ufldl-stanford/svhn --dataset-config cropped_digits --preset norm \\
      --reference tanganke/clip-vit-base-patch32_mnist tanganke/clip-vit-base-patch32_dtd --output svhn-distac
  # low confidence (label smoothing): kappa = 1, temperatures (1, 10)
  hfdistac condition ./my-smoothed-model --preset confidence --output smoothed-distac
  # driven by a recipe: model, base and dataset of task 'digits', reference = the recipe's other tasks;
  # --lr: the rate the suite's cards name (a tenth of its fine-tuning rate; the paper: 1e-5 for ViT-B/32)
  hfdistac condition --recipe example-suite/recipes/norm-mismatch.yaml --task digits --lr 1e-5 \\
      --output digits-distac
  # the same, keeping the result within 15 % of the target norm (hfdistac extension, not in the paper)
  hfdistac condition --recipe example-suite/recipes/norm-mismatch.yaml --task digits --lr 1e-5 \\
      --max-norm-ratio 1.15
  # a Hub dataset is streamed: distil on the first 8,000 images of a seeded shuffle (only their shards fetched)
  hfdistac condition ./my-svhn-model --data ufldl-stanford/svhn --dataset-config cropped_digits --num-images 8000
  # unlabeled images (a plain folder): class names and accuracy from a labeled dataset of the same task
  hfdistac condition ./my-svhn-model --data ./unlabeled-svhn/ --eval-data ufldl-stanford/svhn \\
      --dataset-config cropped_digits
  # a full CLIPModel out, for transformers' zero-shot-image-classification pipeline
  hfdistac condition ./my-smoothed-model --preset confidence --full-clip --output smoothed-clip
  # two processes (CPU shown; on GPUs drop ACCELERATE_USE_CPU and --multi_gpu picks them up)
  ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m hfdistac.cli condition \\
      ./model --preset confidence --output out --checkpoint-every 100   # later: add --resume"""


def _run(cfg: ConditionConfig) -> int:
    from ..conditioning.loop import run_condition
    from ..tables import table

    report = run_condition(cfg)
    if not is_main_process():
        return 0  # only the main process prints
    rows = []
    for label, suffix, norm in (("teacher θ₀+τ", "before", report["norm_before"]),
                                (f"rescaled θ₀+{report['kappa']:.3g}τ", "rescaled_only", report["norm_rescaled"]),
                                ("DisTaC θ₀+τ′", "after", report["norm_after"])):
        rows.append([label, norm, report.get(f"accuracy_{suffix}"), report.get(f"entropy_{suffix}"),
                     report.get(f"ece_{suffix}")])
    print(table(["model", "norm", "acc %", "entropy", "ECE"], rows))
    print(f"\npreset {report['preset']}: kappa={report['kappa']:.4g}, target norm {report['target_norm']:.4g}, "
          f"final norm / target {report['norm_after_over_target']:.3f}"
          + (f" (bounded by {report['max_norm_ratio']:g}x: {report['projected_steps']} steps projected)"
             if report.get("max_norm_ratio") else "") + f", T=({report['teacher_temperature']:g}, "
          f"{report['student_temperature']:g}), {report['steps']} steps on {report['num_processes']} process(es)")
    print(f"wrote {report['output']}")
    if report.get("pushed"):
        pushed = report["pushed"]
        print(f"pushed to {pushed.get('pr_url') or pushed.get('commit_url')}")
    return 0


COMMAND = Command(
    name="condition",
    summary="pre-condition one task vector with DisTaC (distillation from the original model) before merging",
    examples=EXAMPLES,
    config_cls=ConditionConfig,
    run=_run,
)

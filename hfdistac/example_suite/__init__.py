"""The built-in example suite: a tiny, offline replica of the DisTaC paper's 8-task benchmark.

``hfdistac example-suite DIR`` (:func:`build_example_suite`) writes, in the formats the tool reads from the
Hub: a contrastively pretrained tiny ``CLIPModel`` (``DIR/base``), up to eight synthetic classification
datasets that share one scene generator but label different attributes (``DIR/data/<task>``), three
fine-tuned ``CLIPVisionModel`` variants per task — standard, ``-highlr`` (10× learning rate, a long task
vector) and ``-ls`` (label smoothing 0.1, under-confident) — under ``DIR/models``, three recipes
(``original``, ``norm-mismatch``, ``low-confidence``) under ``DIR/recipes`` and ``DIR/suite.json`` with the
figures below.

The build checks the conditions the DisTaC paper is about (``suite.json["checks"]``):

(a) every standard fine-tuned model beats zero-shot on its task by >= 10 points;
(b) the task-arithmetic merge of the standard models beats zero-shot on mean accuracy;
(c) ``-highlr`` task vectors are >= 3× longer than the standard ones, and swapping one into the merge lowers the
    mean normalised accuracy;
(d) the ``-ls`` models' mean test entropy is >= 10× the standard models', and merging them lowers the mean
    normalised accuracy.

Merges are task arithmetic θ₀ + α·Σ_t τ_t, α on the grid {0, 0.05, …, 1} maximising the mean normalised
accuracy on the first 10 % of each train split (held out from fine-tuning), evaluated on test. Normalised
accuracy = merged accuracy / the standard fine-tuned model's accuracy on the same task.

What it took to make the conditions hold (see ``SuitePlan``):

- Temperature fixed at 100 (OpenAI CLIP's final value). With the learned CLIP temperature the tiny model
  stayed near 13, the frozen heads could not produce confident predictions, and the label-smoothed models
  were barely less confident than the standard ones (entropy ratio ~1.3).
- Captions naming 3 to 8 of a scene's attributes. With 1-3 attributes per caption the vision tower learnt too
  little about shape, count and position for fine-tuning to recover within the step budget.
- A tokenizer that keeps every word one token (:mod:`.tokenizer`): ``hfdistac.tiny.build_word_tokenizer``
  splits some words (e.g. "three", "bottom") into pieces because its merges collide, which made 8-attribute
  captions longer than the 32-token context.
- Objects of radius 3.4 / 5.6 px (small / large): smaller shapes are not separable with 8-px patches.
"""

from __future__ import annotations

from .build import SuiteConfig, SuitePlan, SuiteSummary, build_example_suite, format_table, suite_status
from .synthetic import ATTRIBUTES, TASK_NAMES

__all__ = [
    "ATTRIBUTES",
    "TASK_NAMES",
    "SuiteConfig",
    "SuitePlan",
    "SuiteSummary",
    "build_example_suite",
    "format_table",
    "suite_status",
]

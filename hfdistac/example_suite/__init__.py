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

What it took to make the conditions hold (see :class:`SuitePlan`; each step was measured on the build's own
figures):

- Fine-tuning through a *frozen* zero-shot head only works when the head's class embeddings are well apart:
  with near-parallel text embeddings (cos > 0.99) even a 10x learning rate stays near chance. So the
  pretraining captions name every attribute often (probability 0.7), which separates the class names in
  the text tower.
- That made zero-shot nearly as good as fine-tuning (no gain). What keeps zero-shot well below fine-tuned
  accuracy is a *domain shift*, as between CLIP's web images and SVHN or EuroSAT: the base model is
  pretrained on clean, saturated scenes without clutter; the tasks' images have washed-out colours,
  compressed brightness/contrast, more noise, a thinner frame and a digit as clutter.
- Tasks a width-32 ViT with 8-px patches actually learns: object shape, a drawn digit, position and count
  were tried first; the first two were never learnt in pretraining (linear probes at chance) and the last two
  fine-tuned to ~55 %, leaving near-uniform predictions that wrecked the entropy check (d). Global
  attributes (colours, brightness, frame, stripes) are learnt; the most reliable come first, because the
  test fixture builds only the first four.
- Temperature fixed at 100 (OpenAI CLIP's final value). Learnt, it stayed near 13 and standard models
  could not become confident (entropy ratio ~1.3).
- Small fine-tuning steps (AdamW 3e-4, cosine) so task vectors stay small (|τ|/|θ₀| ~ 3 %) and task
  arithmetic can merge them (alpha ~0.4-0.75 instead of 0 with 1e-3), and 2,500 contrastive pretraining
  steps so fine-tuning re-aligns features rather than building them.
- One intra-op torch thread during the build: with 2 threads the floats (and, after 2,500 steps, the files)
  differ from a 1-thread run such as the test suite's (``OMP_NUM_THREADS=1``).
- Known gap (seed 0): with 4 tasks (the test fixture) all four conditions hold. With the default 8, (a) and
  (b) hold and both merge comparisons of (c) and (d) go the paper's way, but the three stripe tasks
  (texture, contrast, stripes) fine-tune only to 63-73 %, so their high-LR norm ratio is ~2.2 (< 3) and
  the mean entropy ratio is ~4.5 (< 10); ``suite.json`` and the build's warning say so.
- A tokenizer that keeps every word one token (``hfdistac.tiny.build_word_tokenizer``, which now simulates
  BPE when adding merges): the earlier version split words such as "three" and "bottom" into pieces, which
  made long captions exceed the 32-token context.
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

"""Probe for issue 29: with eight *distinct image domains* instead of one scene generator, is an under-confident
(label-smoothed) task vector's effect task-local?

Eight small domains, each its own generator and palette (digits, glyphs, textures, colours, counts, terrain,
arrows, positions); a tiny CLIP (``--hidden``) pretrained contrastively on a captioned mixture of the domains,
drawn with a shift (noise, colour jitter, blur) so zero-shot stays below fine-tuned; per task a standard and a
label-smoothed fine-tune through the frozen zero-shot head. Prints per task: zero-shot accuracy and entropy,
standard and LS accuracy and entropy; then what one task vector added alone at α costs the *other* tasks
(standard vs LS; the issue asks ≤ 2 points on average for LS), and the 8-task Task Arithmetic merge of the
standard and of the LS models (α on the same grid as the suite).

    python benchmarks/suite_domains_probe.py --hidden 64 --layers 2

The paper's protocol on the same models (second session): task arithmetic, TIES and TSV-M with α chosen on a
validation split, normalised by each scenario's own models; DisTaC in memory (``distac``: the library's loss,
schedule and data order; κ 1, (1, 10) for label smoothing, κ from the others' mean norm, (10, 10) for the
high-learning-rate model; β 0.5, 500 steps, batch 128, lr = the fine-tuning lr). Stage-1 models are cached in
``--cache`` by the settings that make them.

    python benchmarks/suite_domains_probe.py --hidden 96 --layers 3 --shift 1.0 --sibling-captions \
        --sibling-prob 0.9 --finetune-steps 500 --mismatch-tasks 1

Research code, not part of the suite: nothing here is imported by hfdistac or the tests.

Measured on 2 shared CPU cores, seed 0 (2026-12-07). "Cost" = mean change in the other seven tasks' accuracy when one
vector is added alone at α 0.3; today's one-generator suite measured −5.7 points for an LS vector and +0.3 for a
standard one (issue 29). TA = best α on test, so this is a probe, not the protocol.

| setting | zero-shot | individual std / LS | LS entropy vs ZS | cost std / LS | TA std / LS |
|:--|--:|--:|:--|--:|--:|
| hidden 64, 2 layers, shift 0.6, clean captions, 1500 pretrain steps | 98.4 | 99.6 / 99.8 | LS above ZS (ZS far too sure) | +0.1 / −0.2 | 99.2 / 98.7 |
| hidden 64, 2 layers, shift 1.0, 60 % wrong captions, 800 steps | 53.0 | 92.6 / 93.1 | LS below ZS everywhere | −4.1 / −1.7 | 54.4 / 57.4 |
| hidden 96, 3 layers, shift 1.0, 60 % wrong captions, 1500 steps, fine-tune lr 1e-4 | 45.1 | 85.1 / 85.1 | mixed | −0.5 / −0.5 | 64.0 / 58.6 |
| the same, fine-tune lr 3e-4 × 500 steps | 45.1 | 91.7 / 92.2 | LS below ZS on all 8 | −0.7 / −1.7 | 64.2 / 54.6 |
| hidden 128, otherwise the same | 48.2 | 91.4 / 91.1 | LS below ZS on 7 of 8 | +0.8 / +0.6 | 67.2 / 61.5 |

What it shows: with distinct domains an LS vector's change of confidence stays on its own task (cost ≤ 2 points
in every setting, against −5.7 today); in the fourth setting zero-shot is 45.1 (≤ 60), every LS model is more
confident than zero-shot and less than its standard twin, and merging the LS models costs TA 9.6 points against
the standard ones (64.2 → 54.6). Not yet met: TA ≥ 75 (64.2; 67.2 at hidden 128), digits' individual accuracy
(56.5; the mean is 91.7), and the run time (6.4 min for this probe alone, on a busy machine).

Second session (seed 0, hidden 96, 3 layers, shift 1.0, 1500 pretraining steps, fine-tuning lr 3e-4 × 500;
normalised accuracy, α on validation; "drop" = standard − label-smoothed merge; "recovered" = share of the drop
that DisTaC wins back; NM = the first task's high-lr model swapped in):

| pretraining captions | zero-shot (entropy) | std / LS models | TA, TIES, TSV-M: std | LS | LS + DisTaC | recovered | NM → + DisTaC (recovered) |
|:--|--:|--:|:--|:--|:--|:--|:--|
| 60 % random class | 45.6 (0.53–1.35) | 90.4 / 90.1 (digits 51) | 65.1, 59.3, 65.0 | 60.6, 57.8, 68.9 | 61.0, 53.2, 65.8 | 10, −311, n/a % | 47.1, 42.4, 48.0 → 64.8, 58.0, 63.6 (98, 92, 92 %); glyphs 88, 68, 94 % |
| clean | 97.3 (0.01–0.12) | 99.4 / 99.8 | 98.5, 98.0, 99.0 | 97.0, 97.4, 97.6 | 97.0, 97.2, 97.4 | −4, −31, −18 % (drops ≤ 1.5) | 96.1, 97.5, 97.8 (DisTaC not run) |
| odd classes named as their sibling | 50.9 (0.02–0.68) | 97.5 / 98.2 | 52.9, 50.9, 50.7 | 50.7, 50.6, 50.3 | — | — | — |
| the same for 90 % of their captions | 56.8 (0.12–0.50) | 97.7 / 98.4 | **70.4, 66.1, 73.7** | **58.3, 56.0, 60.4** | 58.1, 57.1, 61.8; κ to the std norm: 61.4, 58.7, 66.3 | −1, 11, 11 %; 25, 27, 44 % | 57.9, 57.7, 60.1 → 68.4, 62.6, 72.4 (84, 58, 90 %) |
| the same, fine-tuning lr 1e-4 × 1000 | 57.4 (0.12–0.50) | 96.8 / 98.1 | 69.2, 64.5, 71.7 | 58.9, 56.3, 60.3 | 60.8, 58.3, 64.7 | 19, 25, 39 % | no drop at 20 × 1e-4 (69.4, 64.0, 72.1) |
| the same, fine-tuning lr 3e-5 × 2000, high lr 60 × | 57.7 (0.12–0.50) | 96.2 / 96.8 (digits 89.5, glyphs 89.0) | 70.1, 64.4, 71.1 | 56.5, 57.9, 62.4 | **62.2, 62.4, 68.3** | **42, 70, 67 %** | 66.9, 61.1, 70.0 → 70.2, 64.9, 70.2 (drops 3.2, 3.3, 1.1) |

- Label smoothing harms the merge only where zero-shot is sure of its errors. With noisy captions zero-shot is
  unsure (entropy 0.53–1.35 nats), and the LS merge is as good as the standard one (drops 4.5, 1.5, −3.9). With
  sibling captions at 90 %, zero-shot's wrong answers are decided by a median 1.4–4.3 nats of logit. The drops
  are then 12.1, 10.1, 13.3 (paper: 19.7 TA, 20.0 TIES, 24.0 TSV-M), and the cost of one LS vector to the
  others at α 0.3 stays −0.9 (≤ 2).
- At lr 3e-4 the drop does not come from the merge inheriting the LS models' indecision (the paper's account).
  The table is the 90 % row at lr 3e-4 with `--mismatch-tasks 0`: one vector alone, own-task gain / change of
  the other tasks in points, and the mean ‖τ‖:

  | vectors | α 0.2 | α 0.4 | α 1.0 | ‖τ‖ |
  |:--|--:|--:|--:|--:|
  | standard | +11.0 / +0.3 | +23.9 / +0.3 | +42.0 / −1.0 | 2.79 |
  | label-smoothed | +10.8 / −0.4 | +22.1 / −1.3 | +42.8 / −7.7 | 4.61 |
  | LS + DisTaC (κ 1, (1, 10)) | +9.7 / −0.5 | +21.1 / −1.1 | +42.8 / −7.2 | 4.79 |
  | LS + DisTaC (κ to the standard mean norm, (1, 10)) | +7.4 / −0.3 | +16.1 / −0.5 | +41.8 / −5.2 | 3.19 |

  Scaled down by α, an LS vector helps its own task as much as a standard one. The LS margin is smaller
  (2.6–3.5 nats against 7–11), but the vector is 1.65× longer. At α 1 it costs the other tasks 7.7 points, where a
  standard vector costs 1.0. The harm is the merge's interference, not the task's indecision.
- DisTaC sharpens every LS model: entropy 0.00–0.07, median margin 10–26 nats, at the teacher's accuracy. But it
  leaves the interference in place (−7.2 at α 1), so the merges win back only −1 to 11 % (paper 70–97 %).
  - Shrinking to the standard models' mean norm as well wins back 25, 27, 44 % (TA, TIES, TSV-M: 61.4, 58.7,
    66.3). It also lowers the own-task gain by about a quarter at α 0.2–0.4 (+7.4 / +16.1 against
    +9.7 / +21.1).
  - The miniature's LS models seem to lower a confident zero-shot's confidence by a change that also reaches
    the other domains. This is the issue's point 2 again, on distinct domains. A suite for the paper's cure
    needs an LS change that stays on its own images at full strength, not only at α 0.3.
- Smaller vectors let DisTaC cure. At fine-tuning lr 1e-4 × 1000 (mean ‖τ‖ 2.34 std, 3.92 LS) the drops
  stay (10.3, 8.2, 11.4) and DisTaC at κ 1 wins back 19, 25, 39 %; the LS vectors' cost to the others at α 1 is
  −5.9 (DisTaC −5.2, standard −0.7). At lr 3e-5 × 2000 (‖τ‖ 2.06 std, 3.31 LS) the drops are 13.6, 6.5, 8.7
  and DisTaC at κ 1, (1, 10) wins back **42, 70, 67 %** (paper 71, 80, 97 %); one vector alone:

  | vectors (lr 3e-5 × 2000) | α 0.2 | α 0.4 | α 1.0 | ‖τ‖ |
  |:--|--:|--:|--:|--:|
  | standard | +7.9 / +0.3 | +19.2 / +0.4 | +40.6 / −0.6 | 2.06 |
  | label-smoothed | +8.2 / −0.2 | +17.4 / −0.7 | +41.1 / −4.9 | 3.31 |
  | LS + DisTaC (κ 1, (1, 10)) | +9.8 / +0.2 | +22.4 / +0.1 | +38.9 / −2.6 | 3.43 |

  Here DisTaC both raises the own-task gain at α 0.2–0.4 and halves the cost to the others at α 1. The price:
  two standard models fall below 90 % (digits 89.5, glyphs 89.0), the norm-mismatch drop almost vanishes even
  at 60 × the learning rate (3.2, 3.3, 1.1), and the 24 fine-tunes take 23 minutes.
- Norm mismatch reproduces on the distinct domains: drops 8.4–18.0 points, DisTaC wins back 58–98 %.
- Wider (third session): hidden 128, otherwise the lr 3e-5 × 2000 row, high lr 100 × on digits. Zero-shot 55.2
  (57.9 normalised); standard models 95.0 mean, digits 80.5; ‖τ‖ std 1.1–3.7, LS 3.3–5.2, high-lr 17.9–31.0.

  | TA, TIES, TSV-M | standard | LS | LS + DisTaC (κ 1, (1, 10)) | recovered | NM digits → + DisTaC | recovered |
  |:--|:--|:--|:--|:--|:--|:--|
  | hidden 128 | 74.3, 64.1, 69.3 | 60.0, 59.8, 62.4 | 66.3, 63.2, 68.3 | 44, 80, 86 % | 65.3, 60.0, 68.6 → 73.9, 64.3, 68.6 | 96, 105, −5 % |

  Width raises TA (70.1 → 74.3) and the cure (42/70/67 → 44/80/86 %), but TIES and TSV-M fall below TA, the LS
  drops of TIES and TSV-M are 4.3 and 6.9 (< 10), the norm-mismatch drop is 9.0 / 4.1 / 0.7 even at 100 × the
  learning rate, digits is at 80.5, and the probe took 6254 s (beside a test run; pretraining alone 981 s).
  One vector alone (own-task gain / change of the others): standard +18.9 / −0.4 at α 0.4, −1.4 at α 1;
  LS +19.2 / −1.3, −5.3 at α 1; LS + DisTaC +22.1 / −0.6, −2.0 at α 1.
- Standard TA 70.4 is below the issue's 75 and TSV-M is 3.3 (not 5) above it. The 90 % row at lr 3e-4 took
  694 s on 2 idle cores (pretraining 109 s, stage 1 420 s): within the issue's ≤ 12 min build + demo, unlike
  lr 3e-5 × 2000.

Fourth session (2026-12-07, seed 0): hidden 96, 3 layers, shift 1.0, sibling captions at 90 %, fine-tuning
lr 1e-4 × 500, high lr 60 × (6e-3 × 500, the high-lr model of the lr 3e-4 rows at 20 ×). Zero-shot 54.9
(58.5 normalised); standard models 94.3 mean but digits 88.0 and positions 77.0 (< 90; positions' head cannot
tell its classes apart: median margin 0.05 even fine-tuned); LS 93.9; ‖τ‖ std 0.97–2.77, LS 2.18–4.17, high-lr
18.6–35.3. Zero-shot entropy 0.12–0.52 nats, LS 0.35–0.87: LS is *less* confident than zero-shot on all 8 tasks,
so the issue's check "zero-shot entropy above LS" fails. Cost of one vector at α 0.3 to the others: std −0.2,
LS −0.7 (≤ 2). Merges (normalised): standard TA 77.8 (α 0.6), TIES 70.0, TSV-M 72.9; LS 66.0, 63.1, 69.6
(drops 11.8, 6.9, 3.3). Norm mismatch on digits: 62.1, 61.9, 65.4 (drops 15.7, 8.1, 7.5); on glyphs drops
17.9, 12.4, 9.8. Stage 1 took 854 s on 2 idle cores (pretraining 219 s), one process.

    python benchmarks/suite_domains_probe.py --hidden 96 --layers 3 --shift 1.0 --sibling-captions \
        --sibling-prob 0.9 --finetune-steps 500 --finetune-lr 1e-4 --highlr-factor 60 --distac-lr 1e-5 \
        --mismatch-tasks 1 --linearity --overlap

DisTaC's learning rate is the lever this session found (κ 1, (1, 10), β 0.5, 500 steps, batch 128; the
paper uses its fine-tuning rate, 1e-5):

| DisTaC lr | LS entropy after DisTaC | LS + DisTaC: TA, TIES, TSV-M | recovered | one LS + DisTaC vector: own gain α 0.4 / others α 1 |
|:--|:--|:--|:--|:--|
| 1e-4 (= fine-tuning) | 0.00–0.35 | 60.3, 61.1, 70.1 | −49, −29, 17 % | +17.9 / −4.6 |
| 3e-5 | 0.00–0.36 | 66.5, 68.1, 73.1 | 4, 72, 107 % | +20.0 / −3.6 |
| **1e-5** | 0.00–0.38 | **69.2, 68.5, 73.3** | **27, 78, 111 %** | +21.3 / −3.8 |
| 3e-6 | 0.08–0.56 | 68.0, 64.1, 70.2 | 17, 14, 18 % | +20.3 / −4.3 |
| 1e-5, κ to the standard mean norm | 0.00–0.37 | 72.7, 70.5, 71.4 | 57, 107, 54 % | +17.6 / −1.7 |

(standard vectors: +18.8 / −0.7; LS: +18.1 / −4.3.) At 1e-5 the norm-mismatch cure holds too: digits
62.1, 61.9, 65.4 → 77.7, 70.0, 73.5 (κ 0.05, (10, 10)): 100, 100, 109 % (91, 98, 104 % at 1e-4). A DisTaC
rate at a tenth of the fine-tuning rate moves the student less far (mean ‖τ‖ 2.97 against 3.26 at 1e-4);
our reading is that it then sharpens without a change of its own that reaches the other tasks. The recoveries of TSV-M (drop 3.3) and TIES (6.9)
are shares of small drops; TA's stays at 27 % with κ 1 because the LS vectors are 1.6 × longer than the
standard ones and DisTaC at κ 1 keeps that length (the cost to the others at α 1 stays −3.8).

Why LS vectors are longer, and why scaling them down does not reproduce the paper's account: `--linearity`
compares the network's own-task accuracy at α with that of its linearised logits z₀ + α·(z₁ − z₀):

| task (std / LS) | network, α 0.2 / 0.4 / 0.6 | linearised | relative error at α 0.4 |
|:--|:--|:--|:--|
| counts std | 54 / 63 / 76 | 56 / 71 / 88 | 0.54 |
| counts LS | 55 / 65 / 82 | 47 / 54 / 64 | 0.53 |
| terrain std | 80 / 95 / 99 | 81 / 99 / 100 | 0.67 |
| terrain LS | 80 / 90 / 100 | 68 / 76 / 94 | 0.48 |

Linearised, an LS vector at α < 1 keeps only α of its small margin and loses to the standard one by 10–25
points: the paper's mechanism. The network is far from linear (relative error 0.35–1.74 on every task; 0.36–1.57
at hidden 128, lr 3e-5 × 2000): scaled down, an LS vector helps its own task as much as a standard one. The
miniature's LS models must *lower* a zero-shot that is more confident than label smoothing allows (above), which
takes the extra length, and it is that extra length that costs the other tasks. Making zero-shot unsure with 40 %
random captions on top (`--caption-noise 0.4`) does make LS and standard vectors equally long where zero-shot is
unsure (digits, glyphs, counts, arrows: 2.97 vs 2.92, ...), but it breaks the heads (zero-shot 38.0, digits 43.5
and positions 48.0 even fine-tuned) and the drops vanish (4.8, 2.3, 1.3): stopped there.

Why TIES and TSV-M stay below TA under the protocol's α ≤ 1 (`--overlap`): the standard vectors' top-16 singular
subspaces overlap 0.3–0.6 on the 96-wide residual side of every matrix (random 0.17; the 384-wide MLP side 0.10–
0.14). TSV-M's orthogonalisation turns a direction shared by several tasks into one of the tasks' mean size, so at
α 1 it under-scales: TSV-M 72.9 at α 1.0, 76.5 at 1.2, 80.0 at 1.5, 81.6 at 2.0 (TIES 70.0, 72.3, 74.2, 74.0);
at hidden 128 (lr 3e-5 × 2000) 69.3, 72.1, 75.9, 80.3. The released DisTaC code sweeps α over linspace(0, 1) for
every method (src/eval.py), so the grid is the paper's protocol; the miniature's narrow residual stream, which
every task writes into, is what keeps TSV-M from TA + 5.

Pretraining on unshifted images (`--shift 0`, otherwise the DisTaC-lr-1e-5 row; 1508 s in all): the subspace
overlap stays (0.40 / 0.36 mean over matrices, against 0.40 / 0.38 with the shift), but the merges change:

| shift | zero-shot | std models (min) | standard TA, TIES, TSV-M | LS drop | LS recovered | NM (digits) drop | NM recovered |
|:--|--:|--:|:--|:--|:--|:--|:--|
| 1.0 | 54.9 | 94.3 (77.0) | 77.8, 70.0, 72.9 | 11.8, 6.9, 3.3 | 27, 78, 111 % | 15.7, 8.1, 7.5 | 100, 100, 109 % |
| **0.5** | **59.2** | **97.9 (95.0)** | **79.3, 70.7, 76.0** | **18.4, 10.7, 13.0** | **56, 101, 85 %** | **15.9, 10.2, 10.9** | **92, 90, 93 %** |
| 0 | 67.3 | 97.5 (92.0) | 84.4, 85.7, 86.1 | 6.7, 13.3, 5.1 | 9, 48, 77 % | 11.1, 15.4, 10.9 | 67, 83, 81 % |

Without the shift every standard model reaches 90 %, TIES and TSV-M rise above TA (TSV-M by 1.7, not 5) and
every norm-mismatch drop passes its target, but zero-shot is 67.3 (terrain 100: colour alone names its
classes), and the LS drops of TA and TSV-M fall below 10.

Half the shift (`--shift 0.5`, 1698 s in all, one process on 2 cores) is the best setting found: it meets
zero-shot ≤ 60, every standard model ≥ 90 %, TA ≥ 75, every LS drop ≥ 10 (paper 19.7, 20.0, 24.0), every
norm-mismatch drop and recovery, and the LS recoveries of TIES (≥ 60 %) and TSV-M (≥ 80 %); an LS vector costs
the others −1.3 points at α 0.3. It misses TIES and TSV-M ≥ TA (the α ≤ 1 cap above), TA's LS recovery (56 %,
target 80; paper 71 %), and the entropy check (zero-shot 0.11–0.34 nats, LS 0.35–0.68). One vector alone
(own-task gain / change of the others): standard +22.6 / −0.4 at α 0.4, −1.4 at α 1; LS +20.5 / −1.7, −6.6;
LS + DisTaC +26.4 / −1.2, −4.3 — DisTaC now raises the own-task gain at small α above the standard vector's,
the paper's mechanism, but the LS length (2.85 against 1.76) and its cost at α 1 stay.

Fifth session (2026-12-07): the shift-0.5 row with 8-10 classes per task (`--more-classes`) and Consensus TA
(`--consensus`); stage 1 908 s (pretraining 225 s), DisTaC and merges 1015 s, one process on 2 cores:

    python benchmarks/suite_domains_probe.py --hidden 96 --layers 3 --shift 0.5 --sibling-captions \
        --sibling-prob 0.9 --more-classes --consensus --finetune-steps 500 --finetune-lr 1e-4 --highlr-factor 60 \
        --mismatch-tasks 1 --distac-lr 1e-5

| TA, TIES, TSV-M, Consensus | standard | LS | LS + DisTaC | recovered | NM digits → + DisTaC | recovered |
|:--|:--|:--|:--|:--|:--|:--|
| 8-10 classes | 76.5, 72.3, 76.6, 77.0 | 61.9, 60.9, 65.8, 61.9 | 73.6, 73.6, 76.5, 74.6 | **80, 111, 99, 84 %** | 58.1, 57.0, 59.3, 58.1 → 77.5, 71.8, 76.2, 77.1 | 105, 97, 98, 100 % |

Zero-shot 53.8 (55.5 normalised; entropy 0.11–0.30); standard models 96.9 mean, glyphs 89.5 the lowest; LS 95.1
(entropy 0.52–0.95). LS drops 14.6, 11.4, 10.8, 15.1; norm-mismatch drops 18.4, 15.3, 17.3, 18.9. An LS vector
alone at α 0.3 changes the others by −0.2 (standard +0.4). One vector alone (own gain / others): standard
+21.1 / +0.8 at α 0.4, +0.8 at α 1; LS +21.8 / −0.5, −7.9; LS + DisTaC +24.5 / +0.1, −4.1. Every recovery
target is met; still missed: TIES and TSV-M ≥ TA (72.3, 76.6 against 76.5), glyphs ≥ 90 % (89.5) and the
entropy check. This is the setting the example suite adopts.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

S = 32  # image size

SEGMENTS = {0: "abcdef", 1: "bc", 2: "abged", 3: "abgcd", 4: "fgbc", 5: "afgcd", 6: "afgedc", 7: "abc", 8: "abcdefg",
            9: "abfgcd"}
DOMAINS = {
    "digits": [str(d) for d in range(10)],
    "glyphs": ["circle", "square", "triangle", "cross", "ring", "diamond"],
    "textures": ["horizontal", "vertical", "diagonal", "checker", "dotted"],
    "colours": ["red", "green", "blue", "yellow", "purple", "orange"],
    "counts": ["one", "two", "three", "four"],
    "terrain": ["water", "forest", "desert", "snow"],
    "arrows": ["up", "down", "left", "right"],
    "positions": ["topleft", "topright", "bottomleft", "bottomright"],
}
PALETTE = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40),
           "purple": (150, 50, 190), "orange": (240, 140, 30), "cyan": (40, 200, 210), "pink": (240, 130, 190),
           "brown": (120, 70, 30), "black": (15, 15, 15)}
# --more-classes: every domain's classes extended (the first ones and their order unchanged), toward the paper's
# 10-397 classes per task; the nine positions are the cells of a 3 x 3 grid.
MORE_CLASSES = {
    "glyphs": ["hbar", "vbar", "frame", "saltire"],
    "textures": ["antidiagonal", "grid", "rings"],
    "colours": ["cyan", "pink", "brown", "black"],
    "counts": ["five", "six", "seven", "eight", "nine"],
    "terrain": ["grass", "rock", "lava", "swamp"],
    "arrows": ["upleft", "upright", "downleft", "downright"],
    "positions": ["top", "bottom", "midleft", "midright", "centre"],
}
TERRAIN = {0: (30, 80, 170), 1: (30, 110, 40), 2: (200, 170, 110), 3: (235, 240, 245), 4: (110, 190, 70),
           5: (120, 120, 125), 6: (200, 60, 20), 7: (80, 90, 40)}
CELLS = [(0, 0), (0, 2), (2, 0), (2, 2), (0, 1), (2, 1), (1, 0), (1, 2), (1, 1)]  # positions' (row, column)


def use_more_classes() -> None:
    """Extend :data:`DOMAINS` in place with :data:`MORE_CLASSES`."""
    for d, extra in MORE_CLASSES.items():
        if extra[0] not in DOMAINS[d]:
            DOMAINS[d] += extra


def _yx():
    return np.mgrid[0:S, 0:S].astype(np.float32)


def render(domain: str, label: int, rng: np.random.Generator) -> np.ndarray:
    """One ``[S, S, 3]`` uint8 image of ``domain`` with class ``label`` (nuisances drawn from ``rng``)."""
    yy, xx = _yx()
    img = np.zeros((S, S, 3), np.float32)
    if domain == "digits":  # seven-segment digit, white on dark blue
        img[:] = (20, 30, 70)
        x0, y0, w, h, t = rng.integers(7, 13), rng.integers(4, 8), rng.integers(9, 13), rng.integers(18, 23), 2
        seg = {"a": (y0, y0 + t, x0, x0 + w), "g": (y0 + h // 2, y0 + h // 2 + t, x0, x0 + w),
               "d": (y0 + h - t, y0 + h, x0, x0 + w), "f": (y0, y0 + h // 2, x0, x0 + t),
               "b": (y0, y0 + h // 2, x0 + w - t, x0 + w), "e": (y0 + h // 2, y0 + h, x0, x0 + t),
               "c": (y0 + h // 2, y0 + h, x0 + w - t, x0 + w)}
        for s in SEGMENTS[label]:
            a, b, c, d = seg[s]
            img[a:b, c:d] = (235, 235, 220)
    elif domain == "glyphs":  # outline shapes, dark ink on parchment
        img[:] = (225, 210, 170)
        cy, cx, r = rng.uniform(12, 20), rng.uniform(12, 20), rng.uniform(6, 9)
        dy, dx = yy - cy, xx - cx
        dist = np.sqrt(dy ** 2 + dx ** 2)
        mask = {0: dist < r, 1: (np.abs(dy) < r) & (np.abs(dx) < r),
                2: (dy < r * 0.8) & (dy > -r) & (np.abs(dx) < (dy + r) * 0.6),
                3: ((np.abs(dy) < 2) & (np.abs(dx) < r)) | ((np.abs(dx) < 2) & (np.abs(dy) < r)),
                4: (dist < r) & (dist > r - 3), 5: (np.abs(dy) + np.abs(dx)) < r,
                6: (np.abs(dy) < 2.5) & (np.abs(dx) < r), 7: (np.abs(dx) < 2.5) & (np.abs(dy) < r),
                8: (np.maximum(np.abs(dy), np.abs(dx)) < r) & (np.maximum(np.abs(dy), np.abs(dx)) > r - 3),
                9: ((np.abs(dy - dx) < 2) | (np.abs(dy + dx) < 2)) & (np.abs(dy) < r)}[label]
        img[mask] = (40, 30, 20)
    elif domain == "textures":  # grey patterns, random phase and period
        period, phase = rng.uniform(4, 7), rng.uniform(0, 6.3)
        wave = {0: np.sin(yy * 6.283 / period + phase), 1: np.sin(xx * 6.283 / period + phase),
                2: np.sin((xx + yy) * 4.44 / period + phase),
                3: np.sign(np.sin(xx * 6.283 / period + phase)) * np.sign(np.sin(yy * 6.283 / period + phase)),
                4: (np.sin(xx * 6.283 / period + phase) * np.sin(yy * 6.283 / period + phase) > 0.6) * 2 - 1.0,
                5: np.sin((xx - yy) * 4.44 / period + phase),
                6: np.maximum(np.sin(xx * 6.283 / period + phase), np.sin(yy * 6.283 / period + phase)) * 2 - 1,
                7: np.sin(np.sqrt((yy - S / 2) ** 2 + (xx - S / 2) ** 2) * 6.283 / period + phase)}[label]
        img[:] = (128 + 80 * wave)[..., None]
    elif domain == "colours":  # a coloured patch on grey
        img[:] = rng.uniform(90, 150)
        y0, x0, sz = rng.integers(2, 12), rng.integers(2, 12), rng.integers(14, 20)
        img[y0:y0 + sz, x0:x0 + sz] = np.array(PALETTE[DOMAINS["colours"][label]]) + rng.normal(0, 12, 3)
    elif domain == "counts":  # 1-4 bright squares on black
        img[:] = 10
        cells = rng.permutation(9)[:label + 1]
        for c in cells:
            y, x = 2 + (c // 3) * 10 + rng.integers(0, 3), 2 + (c % 3) * 10 + rng.integers(0, 3)
            img[y:y + 5, x:x + 5] = (250, 250, 250)
    elif domain == "terrain":  # smooth noise fields in class palettes, seen from above
        base = TERRAIN[label]
        field = rng.normal(0, 1, (S // 4, S // 4)).repeat(4, 0).repeat(4, 1)
        field = (field + np.roll(field, 2, 0) + np.roll(field, 2, 1)) / 3
        img[:] = np.array(base) + 30 * field[..., None]
    elif domain == "arrows":  # a white arrow on a green sign
        img[:] = (30, 120, 60)
        cy, cx = rng.uniform(13, 19), rng.uniform(13, 19)
        dy, dx = yy - cy, xx - cx
        uy, ux = {0: (-1, 0), 1: (1, 0), 2: (0, -1), 3: (0, 1), 4: (-1, -1), 5: (-1, 1), 6: (1, -1),
                  7: (1, 1)}[label]
        u = (uy * dy + ux * dx) / np.hypot(uy, ux)  # along the arrow
        v = (ux * dy - uy * dx) / np.hypot(uy, ux)
        shaft = (u > -9) & (u < 2) & (np.abs(v) < 2)
        head = (u >= 2) & (u < 9) & (np.abs(v) < (9 - u) * 0.9)
        img[shaft | head] = (245, 245, 245)
    elif domain == "positions":  # a red ball in one quadrant on white
        img[:] = (240, 240, 240)
        if len(DOMAINS["positions"]) == 4:  # quadrants
            cy = rng.uniform(5, 11) + (16 if label >= 2 else 0)
            cx = rng.uniform(5, 11) + (16 if label % 2 else 0)
        else:  # cells of a 3 x 3 grid
            cy, cx = (rng.uniform(3.5, 7) + 10.7 * c for c in CELLS[label])
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(12, 25)] = (210, 30, 30)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def shift(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """The pretraining domain: noise, colour jitter and a blur (so zero-shot is below fine-tuned)."""
    x = img.astype(np.float32)
    x = x * rng.uniform(1 - 0.4 * strength, 1 + 0.4 * strength, 3) + rng.normal(0, 40 * strength, 3)
    x = (x + np.roll(x, 1, 0) + np.roll(x, 1, 1)) / 3 if rng.random() < strength else x
    x += rng.normal(0, 25 * strength, x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


def make(domain: str, n: int, rng: np.random.Generator, pretrain_shift: float | None = None):
    labels = rng.integers(0, len(DOMAINS[domain]), n)
    imgs = [render(domain, int(y), rng) for y in labels]
    if pretrain_shift is not None:
        imgs = [shift(im, rng, pretrain_shift) for im in imgs]
    return np.stack(imgs), labels


def processed(processor, images: np.ndarray) -> torch.Tensor:
    return processor(images=list(images), return_tensors="pt")["pixel_values"]


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--pretrain-steps", type=int, default=1500)
    p.add_argument("--pretrain-per-domain", type=int, default=600)
    p.add_argument("--shift", type=float, default=0.6)
    p.add_argument("--caption-noise", type=float, default=0.0, help="share of pretraining captions with a random class")
    p.add_argument("--sibling-captions", action="store_true",
                   help="caption every odd class with the word of the class before it while pretraining, so zero-shot "
                        "is confidently wrong on those classes (as real CLIP on distinctions it never learned)")
    p.add_argument("--sibling-prob", type=float, default=1.0,
                   help="with --sibling-captions: the share of an odd class's captions that name its sibling")
    p.add_argument("--consensus", action="store_true", help="also merge with Consensus TA (TALL masks, k 2)")
    p.add_argument("--more-classes", action="store_true",
                   help="8-10 classes per domain (MORE_CLASSES) instead of 4-10")
    p.add_argument("--n-train", type=int, default=800)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--finetune-steps", type=int, default=300)
    p.add_argument("--finetune-lr", type=float, default=3e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--highlr-factor", type=float, default=20.0)
    p.add_argument("--alpha", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--distac-steps", type=int, default=500, help="DisTaC optimiser steps (0: no DisTaC stage)")
    p.add_argument("--distac-lr", type=float, default=None, help="default: the fine-tuning learning rate")
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--ls-kappa", choices=["1", "std-norm"], default="1",
                   help="κ of the LS vectors' DisTaC: 1 (the paper) or to the standard vectors' mean norm (a diagnosis: "
                        "unknowable in practice, where every vector is label-smoothed)")
    p.add_argument("--mismatch-tasks", type=int, default=2, help="norm-mismatch runs (tasks in order; the paper: 8)")
    p.add_argument("--cache", default="/tmp/suite_domains_probe", help="stage-1 models are kept here by setting")
    p.add_argument("--overlap", action="store_true",
                   help="also print how much the standard vectors' top singular subspaces overlap, and the standard "
                        "TIES / TSV-M merges beyond the protocol's α ≤ 1")
    p.add_argument("--linearity", action="store_true",
                   help="also print each vector's own-task accuracy at α against its linearised logits")
    return p.parse_args()


def _pretrain(a: argparse.Namespace, names: list[str], processor, tokenizer, clip) -> None:
    """Contrastive pretraining on a shifted, caption-noisy mixture of the domains (in place)."""
    from hfdistac.example_suite.training import pretrain_clip

    rng = np.random.default_rng(a.seed)
    pre_imgs, captions = [], []
    for d in names:
        imgs, labels = make(d, a.pretrain_per_domain, rng, a.shift)
        pre_imgs.append(imgs)
        noisy = rng.random(len(labels)) < a.caption_noise  # a wrong class word: weaker, less sure zero-shot
        sibling = rng.random(len(labels)) < a.sibling_prob if a.sibling_captions and a.sibling_prob != 1.0 \
            else np.full(len(labels), a.sibling_captions)
        shown = [y - (y % 2) if s else y for y, s in zip(labels, sibling, strict=True)]
        words = [DOMAINS[d][int(rng.integers(len(DOMAINS[d])))] if n else DOMAINS[d][y]
                 for y, n in zip(shown, noisy, strict=True)]
        captions += [f"a photo of a {w} {d}" for w in words]
    pixels = processed(processor, np.concatenate(pre_imgs))
    enc = tokenizer(captions, padding=True, return_tensors="pt")
    pretrain_clip(clip, pixels, enc["input_ids"], enc["attention_mask"], steps=a.pretrain_steps, batch_size=128,
                  lr=3e-3, seed=a.seed, learn_temperature=False, progress=False)


def _stage1(a: argparse.Namespace, names: list[str], processor, tokenizer):
    """Pretrained base, heads and every task vector (std, LS, high-lr), cached by the settings that make them
    (the pretrained CLIP on its own too, so fine-tuning settings can change without pretraining again)."""
    import copy
    import hashlib
    import json
    import os

    from safetensors.torch import load_file, save_file
    from transformers import CLIPModel

    from hfdistac.example_suite.training import finetune_vision, vision_params
    from hfdistac.heads import build_head
    from hfdistac.tiny import tiny_clip_config

    base_keys = ("hidden", "layers", "pretrain_steps", "pretrain_per_domain", "shift", "caption_noise", "seed",
                 *(("sibling_captions",) if a.sibling_captions else ()),
                 *(("sibling_prob",) if a.sibling_captions and a.sibling_prob != 1.0 else ()),
                 *(("more_classes",) if a.more_classes else ()))
    keys = (*base_keys, "n_train", "finetune_steps", "finetune_lr", "label_smoothing", "highlr_factor")

    def cached(names_: tuple[str, ...]) -> str:
        tag = hashlib.sha256(json.dumps({k: getattr(a, k) for k in names_}).encode()).hexdigest()[:12]
        return os.path.join(a.cache, f"{tag}.safetensors")

    path, base_path = cached(keys), cached(base_keys) + ".base"
    cfg = tiny_clip_config(tokenizer, hidden_size=a.hidden, num_layers=a.layers, num_heads=max(2, a.hidden // 32),
                           image_size=S, patch_size=8, projection_dim=a.hidden)
    cfg.logit_scale_init_value = float(np.log(100.0))
    torch.manual_seed(a.seed)
    clip = CLIPModel(cfg)
    vision = copy.deepcopy(clip.vision_model)
    if os.path.exists(path):
        return vision, load_file(path), True
    start = time.perf_counter()
    os.makedirs(a.cache, exist_ok=True)
    if os.path.exists(base_path):  # θ₀ and the heads (the text side is needed for nothing else)
        out = load_file(base_path)
    else:
        _pretrain(a, names, processor, tokenizer, clip)
        clip.eval()
        out = {f"theta0/{k}": v for k, v in vision_params(clip.vision_model).items()}
        for d in names:
            head = build_head(clip, tokenizer, [f"{c} {d}" for c in DOMAINS[d]], ["a photo of a {c}."])
            out[f"head/{d}/weight"], out[f"head/{d}/projection"] = head.weight, head.projection
            out["logit_scale"] = torch.tensor(head.logit_scale)
        save_file({k: v.contiguous() for k, v in out.items()}, base_path)
    print(f"pretrained in {time.perf_counter() - start:.0f} s", flush=True)
    theta0 = _part(out, "theta0/")
    for d in names:
        head = _head(out, d)
        train = _data(a, d)[0:2]
        for kind, ls, lr in (("std", 0.0, a.finetune_lr), ("ls", a.label_smoothing, a.finetune_lr),
                             ("highlr", 0.0, a.finetune_lr * a.highlr_factor)):
            _load(vision, theta0)
            finetune_vision(vision, head, *train, steps=a.finetune_steps, batch_size=64, lr=lr, seed=a.seed,
                            label_smoothing=ls, progress=False)
            out.update({f"{kind}/{d}/{k}": v - theta0[k] for k, v in vision_params(vision).items()})
        print(f"{d}: fine-tuned ({time.perf_counter() - start:.0f} s)", flush=True)
    save_file({k: v.contiguous() for k, v in out.items()}, path)
    return vision, out, False


_DATA: dict = {}


def _data(a: argparse.Namespace, d: str):
    """Task ``d``'s (train pixels, train labels, val pixels, val labels, test pixels, test labels)."""
    if d not in _DATA:
        from hfdistac.tiny import tiny_image_processor

        processor = tiny_image_processor(S)
        r = np.random.default_rng([a.seed, 1, list(DOMAINS).index(d)])
        tr, te, va = make(d, a.n_train, r), make(d, a.n_test, r), make(d, a.n_test, r)
        _DATA[d] = (processed(processor, tr[0]), torch.from_numpy(tr[1]), processed(processor, va[0]),
                    torch.from_numpy(va[1]), processed(processor, te[0]), torch.from_numpy(te[1]))
    return _DATA[d]


def _load(vision, weights) -> None:
    from hfdistac.example_suite.training import load_vision_params

    load_vision_params(vision, weights)


def _part(store: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in store.items() if k.startswith(prefix)}


def _head(store: dict, d: str):
    from hfdistac.heads import Head

    return Head(store[f"head/{d}/weight"], store[f"head/{d}/projection"], float(store["logit_scale"]), DOMAINS[d],
                ["{c}"])


def distac(vision, head, theta0, tau, pixels, *, kappa: float, temps: tuple[float, float], beta: float, lr: float,
           steps: int, seed: int, batch_size: int = 128) -> dict[str, torch.Tensor]:
    """Algorithm 1 in memory, with the library's loss, anchor, schedule and data order: the conditioned τ."""
    from hfdistac.conditioning.algorithm import (
        anchor_penalty,
        cosine_with_warmup,
        distillation_loss,
        effective_warmup,
        global_batch_indices,
    )
    from hfdistac.example_suite.training import predict_logits

    _load(vision, {k: theta0[k] + tau[k] for k in theta0})
    teacher = predict_logits(vision, head, pixels)
    init = {k: theta0[k] + kappa * tau[k] for k in theta0}
    _load(vision, init)
    params = {f"vision_model.{k}": p for k, p in vision.named_parameters()}
    opt = torch.optim.AdamW(params.values(), lr=lr, weight_decay=0.0)
    warm = effective_warmup(steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, total=steps, warmup=warm))
    vision.train()
    for step in range(steps):
        idx = global_batch_indices(len(pixels), batch_size, step, seed)
        z = head.logits(vision(pixel_values=pixels[idx]).pooler_output)
        loss = distillation_loss(z, teacher[idx], *temps)
        loss = loss + beta * anchor_penalty(params, init)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    vision.eval()
    return {k: p.detach().clone() - theta0[k] for k, p in params.items()}


@torch.no_grad()
def _linearity(a: argparse.Namespace, vision, theta0: dict, heads: dict, taus: dict, names: list[str]) -> None:
    """Own-task accuracy of θ₀ + α·τ against that of the linearised logits z₀ + α·(z₁ − z₀), per task and kind.

    In the linear regime (large models, small vectors) a label-smoothed vector at α < 1 keeps only α of its
    small margin, which is the paper's account of the low-confidence drop; the printed relative error
    ‖z(0.4) − z_lin(0.4)‖ / ‖z(0.4) − z₀‖ says how far the miniature is from that regime.
    """
    from hfdistac.example_suite.training import predict_logits

    def logits(tau, alpha, d):
        _load(vision, {k: v + alpha * tau[k] for k, v in theta0.items()} if tau else theta0)
        return predict_logits(vision, heads[d], _data(a, d)[4])

    print("\nOwn-task accuracy at α 0.2 / 0.4 / 0.6: the network | its linearised logits; relative error at α 0.4")
    print("| task | vector | network | linearised | rel. error |\n|:--|:--|:--|:--|--:|")
    for d in names:
        y, z0 = _data(a, d)[5], logits(None, 0.0, d)
        for kind in ("std", "ls"):
            z1 = logits(taus[kind][d], 1.0, d)
            net, lin = [], []
            for al in (0.2, 0.4, 0.6):
                za, zl = logits(taus[kind][d], al, d), z0 + al * (z1 - z0)
                net.append(100 * float((za.argmax(1) == y).float().mean()))
                lin.append(100 * float((zl.argmax(1) == y).float().mean()))
                if al == 0.4:
                    err = float((za - zl).norm() / (za - z0).norm())
            print(f"| {d} | {kind} | {' / '.join(f'{x:.0f}' for x in net)} | {' / '.join(f'{x:.0f}' for x in lin)} "
                  f"| {err:.2f} |", flush=True)


def _overlap(taus: dict, names: list[str], top: int = 16) -> None:
    """Mean over task pairs of ‖U_sᵀU_t‖²_F / top for each weight matrix's top singular vectors (output side U,
    input side V), against top / width for random subspaces: the directions TSV-M's orthogonalisation averages."""
    import itertools

    std = taus["std"]
    keys = [k for k, v in std[names[0]].items() if v.ndim == 2 and min(v.shape) >= 4 * top]
    print(f"\nTop-{top} singular subspaces of the standard vectors: mean pairwise overlap (random: "
          f"{top / min(std[names[0]][keys[0]].shape):.3f})\n| matrix | output side | input side |\n|:--|--:|--:|")
    for k in keys:
        svd = {d: torch.linalg.svd(std[d][k].float(), full_matrices=False) for d in names}
        pairs = list(itertools.combinations(names, 2))
        out = np.mean([float((svd[x][0][:, :top].T @ svd[y][0][:, :top]).pow(2).sum()) / top for x, y in pairs])
        inp = np.mean([float((svd[x][2][:top] @ svd[y][2][:top].T).pow(2).sum()) / top for x, y in pairs])
        print(f"| {k.removeprefix('vision_model.encoder.')} | {out:.3f} | {inp:.3f} |")


def main() -> None:
    from hfdistac.merging.task_arithmetic import task_arithmetic_merge
    from hfdistac.merging.ties import ties_merge
    from hfdistac.merging.tsvm import tsvm_merge
    from hfdistac.metrics import entropy, top1_accuracy
    from hfdistac.task_vectors import global_norm
    from hfdistac.tiny import build_word_tokenizer, tiny_image_processor

    a = _args()
    if a.more_classes:
        use_more_classes()
    start = time.perf_counter()
    names = list(DOMAINS)
    words = [w for d, cs in DOMAINS.items() for w in [d, *cs]] + ["a", "photo", "of", "the", "image"]
    vision, store, cached = _stage1(a, names, tiny_image_processor(S), build_word_tokenizer(words))
    print(f"stage 1 {'from the cache' if cached else 'built'} ({time.perf_counter() - start:.0f} s)", flush=True)
    theta0 = _part(store, "theta0/")
    heads = {d: _head(store, d) for d in names}
    taus = {kind: {d: _part(store, f"{kind}/{d}/") for d in names} for kind in ("std", "ls", "highlr")}
    norms = {kind: {d: global_norm(tau) for d, tau in by_task.items()} for kind, by_task in taus.items()}

    from hfdistac.example_suite.training import predict_logits

    def evaluate(weights, d, split=4):
        _load(vision, weights)
        lg = predict_logits(vision, heads[d], _data(a, d)[split])
        return top1_accuracy(lg, _data(a, d)[split + 1]), float(entropy(lg).mean())

    def wrong_margin(weights, d) -> float:
        """Median top-1 minus top-2 logit over the test images this model gets wrong (how sure its errors are)."""
        _load(vision, weights)
        lg = predict_logits(vision, heads[d], _data(a, d)[4])
        top = lg.topk(2, dim=-1).values
        wrong = lg.argmax(-1) != _data(a, d)[5]
        return float((top[:, 0] - top[:, 1])[wrong].median()) if wrong.any() else float("nan")

    def margin(weights, d) -> float:
        _load(vision, weights)
        top = predict_logits(vision, heads[d], _data(a, d)[4]).topk(2, dim=-1).values
        return float((top[:, 0] - top[:, 1]).median())

    def added(tau_sets, alpha):
        w = {k: v.clone() for k, v in theta0.items()}
        for tau in tau_sets:
            for k, v in tau.items():
                w[k] += alpha * v
        return w

    zs = {d: evaluate(theta0, d) for d in names}
    acc = {kind: {d: evaluate(added([taus[kind][d]], 1.0), d) for d in names} for kind in taus}
    print("\n| task | classes | zero-shot acc | ZS entropy | std acc | std entropy | LS acc | LS entropy | high-lr acc |"
          " ‖τ‖ std / LS / high-lr |")
    print("|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for d in names:
        print(f"| {d} | {len(DOMAINS[d])} | {zs[d][0]:.1f} | {zs[d][1]:.3f} | {acc['std'][d][0]:.1f} | "
              f"{acc['std'][d][1]:.3f} | {acc['ls'][d][0]:.1f} | {acc['ls'][d][1]:.3f} | {acc['highlr'][d][0]:.1f} | "
              f"{norms['std'][d]:.2f} / {norms['ls'][d]:.2f} / {norms['highlr'][d]:.2f} |")

    print("\nMedian top-1 − top-2 logit on test: zero-shot on its wrong answers | zero-shot | std | LS "
          "(the LS vector at α overrules a wrong zero-shot answer only if α·(its margin + the error's) > the error's)")
    for d in names:
        print(f"| {d} | {wrong_margin(theta0, d):.2f} | {margin(theta0, d):.2f} | "
              f"{margin(added([taus['std'][d]], 1.0), d):.2f} | {margin(added([taus['ls'][d]], 1.0), d):.2f} |")
    print(f"\nOne task vector added alone at alpha {a.alpha}: mean change of the OTHER tasks' accuracy (points)")
    print("| added | standard | label-smoothed |\n|:--|--:|--:|")
    costs = {"std": [], "ls": []}
    for d in names:
        row = []
        for kind in ("std", "ls"):
            w = added([taus[kind][d]], a.alpha)
            delta = np.mean([evaluate(w, o)[0] - zs[o][0] for o in names if o != d])
            costs[kind].append(delta)
            row.append(delta)
        print(f"| {d} | {row[0]:+.1f} | {row[1]:+.1f} |")
    print(f"| mean | {np.mean(costs['std']):+.1f} | {np.mean(costs['ls']):+.1f} |", flush=True)
    if a.linearity:
        _linearity(a, vision, theta0, heads, taus, names)

    merges = {"TA": task_arithmetic_merge, "TIES": ties_merge, "TSV-M": tsvm_merge}
    if a.consensus:
        from hfdistac.merging.consensus import consensus_merge

        merges["Consensus"] = consensus_merge
    grid = [round(0.05 * i, 2) for i in range(1, 21)]

    def merged_score(tau_list, individual):
        """Per method: (mean normalised test accuracy, mean absolute, α) with α chosen on validation."""
        out = {}
        for m, fn in merges.items():
            tau_m = fn(tau_list)
            best = max(grid, key=lambda al: np.mean([evaluate(added([tau_m], al), d, 2)[0] for d in names]))
            test = [evaluate(added([tau_m], best), d)[0] for d in names]
            out[m] = (100 * np.mean([t / individual[d] for t, d in zip(test, names, strict=True)]), np.mean(test), best)
        return out

    def show(title, scores):
        print(f"{title}: " + "; ".join(f"{m} {v[0]:.1f} (abs {v[1]:.1f}, α {v[2]})" for m, v in scores.items()),
              flush=True)

    ind = {kind: {d: acc[kind][d][0] for d in names} for kind in taus}
    print(f"\nzero-shot mean {np.mean([zs[d][0] for d in names]):.1f}, normalised by std "
          f"{100 * np.mean([zs[d][0] / ind['std'][d] for d in names]):.1f}; individual std "
          f"{np.mean(list(ind['std'].values())):.1f}, LS {np.mean(list(ind['ls'].values())):.1f}")
    std = merged_score(list(taus["std"].values()), ind["std"])
    show("standard (normalised by std)", std)
    if a.overlap:
        _overlap(taus, names)
        for m in ("TIES", "TSV-M"):
            tau_m = merges[m](list(taus["std"].values()))
            print(f"standard {m} beyond the grid (test, normalised): " + ", ".join(
                f"α {al} {100 * np.mean([evaluate(added([tau_m], al), d)[0] / ind['std'][d] for d in names]):.1f}"
                for al in (1.0, 1.2, 1.5, 2.0)), flush=True)
    ls = merged_score(list(taus["ls"].values()), ind["ls"])
    show("low-confidence (normalised by LS)", ls)
    if a.distac_steps:
        lr = a.distac_lr or a.finetune_lr
        cond = {}
        for d in names:
            kappa = 1.0 if a.ls_kappa == "1" else float(np.mean(list(norms["std"].values()))) / norms["ls"][d]
            cond[d] = distac(vision, heads[d], theta0, taus["ls"][d], _data(a, d)[0], kappa=kappa,
                             temps=(1.0, 10.0), beta=a.beta, lr=lr, steps=a.distac_steps, seed=a.seed)
        print("DisTaC margins: " + ", ".join(f"{d} {margin(added([cond[d]], 1.0), d):.2f}" for d in names))
        print(f"DisTaC (1,10) on the LS vectors done ({time.perf_counter() - start:.0f} s); entropy LS → DisTaC: "
              + ", ".join(f"{d} {acc['ls'][d][1]:.2f}→{evaluate(added([cond[d]], 1.0), d)[1]:.2f}" for d in names))
        print("One vector alone at α: mean own-task gain over zero-shot / mean change of the other tasks (points);"
              " ‖τ‖ mean")
        print("| vectors | α 0.2 | α 0.4 | α 1.0 | ‖τ‖ |\n|:--|--:|--:|--:|--:|")
        for kind, vecs in (("standard", taus["std"]), ("label-smoothed", taus["ls"]), ("LS + DisTaC", cond)):
            cells = []
            for al in (0.2, 0.4, 1.0):
                own, other = [], []
                for d in names:
                    w = added([vecs[d]], al)
                    own.append(evaluate(w, d)[0] - zs[d][0])
                    other.append(np.mean([evaluate(w, o)[0] - zs[o][0] for o in names if o != d]))
                cells.append(f"{np.mean(own):+.1f} / {np.mean(other):+.1f}")
            print(f"| {kind} | " + " | ".join(cells) + f" | {np.mean([global_norm(v) for v in vecs.values()]):.2f} |",
                  flush=True)
        lsd = merged_score(list(cond.values()), ind["ls"])
        show("low-confidence + DisTaC (normalised by LS)", lsd)
        print("recovered share of the LS drop: " + ", ".join(
            f"{m} {100 * (lsd[m][0] - ls[m][0]) / (std[m][0] - ls[m][0]):.0f} %" if std[m][0] > ls[m][0] else
            f"{m} (no drop)" for m in merges))
    for d in names[:a.mismatch_tasks]:
        ts = {**taus["std"], d: taus["highlr"][d]}
        indiv = {**ind["std"], d: ind["highlr"][d]}
        nm = merged_score(list(ts.values()), indiv)
        show(f"norm mismatch on {d}", nm)
        if a.distac_steps:
            kappa = float(np.mean([norms["std"][o] for o in names if o != d])) / norms["highlr"][d]
            c = distac(vision, heads[d], theta0, taus["highlr"][d], _data(a, d)[0], kappa=kappa, temps=(10.0, 10.0),
                       beta=a.beta, lr=a.distac_lr or a.finetune_lr, steps=a.distac_steps, seed=a.seed)
            nmd = merged_score(list({**ts, d: c}.values()), indiv)
            show(f"norm mismatch on {d} + DisTaC (κ {kappa:.2f})", nmd)
            print("recovered: " + ", ".join(
                f"{m} {100 * (nmd[m][0] - nm[m][0]) / (std[m][0] - nm[m][0]):.0f} %" if std[m][0] > nm[m][0] else
                f"{m} (no drop)" for m in merges))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

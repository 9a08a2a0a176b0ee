"""Benchmark: where one DisTaC step's time goes at ViT-B/32 size (CPU time of each part, one thread).

Times, on a random-weight ViT-B/32 vision tower (87.5 M parameters): the teacher's forward pass, the student's
forward + backward, the anchor β‖θ − θ_init‖² through autograd and as hfdistac forms it (one difference per
parameter: a dot product for the value, ``add_(d, alpha)`` for the gradient), gradient clipping, and an AdamW
step in its three torch implementations (default for-loop, ``foreach``, ``fused``). The best of
``--repeats`` runs of each, as a table.

Usage::

    python benchmarks/bench_kd_step.py --batch-size 8 --threads 1
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()

    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=32)
    student, teacher = CLIPVisionModel(cfg), CLIPVisionModel(cfg).eval()
    x = torch.randn(a.batch_size, 3, 224, 224)
    params = list(student.parameters())
    anchor = [q.detach().clone().add_(1e-3) for q in params]

    def best(fn) -> float:
        times = []
        for _ in range(a.repeats):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
        return min(times)

    def teacher_forward():
        with torch.no_grad():
            teacher(pixel_values=x)

    def student_step():
        student(pixel_values=x).pooler_output.pow(2).mean().backward()

    def anchor_autograd():
        (0.5 * sum(((q - r) ** 2).sum() for q, r in zip(params, anchor, strict=True))).backward()

    @torch.no_grad()
    def anchor_fused():
        total = torch.zeros(())
        for q, r in zip(params, anchor, strict=True):
            d = q - r
            total += torch.dot(d.reshape(-1), d.reshape(-1))
            q.grad.add_(d, alpha=1.0)

    rows = {"teacher forward": best(teacher_forward), "student forward + backward": best(student_step),
            "anchor through autograd": best(anchor_autograd), "anchor, hfdistac (value + gradient)": best(anchor_fused),
            "clip_grad_norm_": best(lambda: torch.nn.utils.clip_grad_norm_(params, 1.0))}
    for kind in ("default", "foreach", "fused"):
        opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0, **({} if kind == "default" else {kind: True}))
        opt.step()  # the moments exist from here on
        rows[f"AdamW step ({kind})"] = best(opt.step)
        del opt
    print(f"ViT-B/32 vision tower, batch {a.batch_size}, {a.threads} thread(s), best of {a.repeats} (CPU s)\n")
    print("| part of a step | CPU s |\n|:--|--:|")
    for name, seconds in rows.items():
        print(f"| {name} | {seconds:.3f} |")


if __name__ == "__main__":
    main()

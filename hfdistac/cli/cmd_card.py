"""``hfdistac card``: a merge-readiness model card for any existing checkpoint."""

from __future__ import annotations

from ..readiness import CardConfig
from .main import Command


def _run(cfg: CardConfig) -> int:
    from ..readiness import run_card

    result = run_card(cfg)
    print(result["section"].strip())
    if result.get("output"):
        print(f"\nwrote {result['output']}")
    push = result.get("push")
    if push:
        print(f"\n{'opened ' + push['pr_url'] if push.get('pr_url') else 'pushed ' + push['commit_url']}")
    return 0


COMMAND = Command(
    "card",
    "write a merge-readiness card (norms, entropy, calibration, verdict) for any checkpoint",
    """\
      hfdistac card tanganke/clip-vit-base-patch32_svhn --base openai/clip-vit-base-patch32 \\
          --data ufldl-stanford/svhn --dataset-config cropped_digits --reference tanganke/clip-vit-base-patch32_mnist
      hfdistac card example-suite/models/digits-highlr --reference example-suite/models/glyphs --output card/
      hfdistac card user/my-clip-finetune --open-pr        # propose the card on the model's own repo""",
    CardConfig,
    _run,
)

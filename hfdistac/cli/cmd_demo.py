"""``hfdistac demo``: the paper's Table 1 in miniature on the example suite, offline."""

from __future__ import annotations

from ..demo import DemoConfig
from .main import Command


def _run(cfg: DemoConfig) -> int:
    from ..demo import run_demo
    from ..tables import table

    summary = run_demo(cfg)
    d = summary["diagnoses"]
    print("Diagnosis (inspect):")
    for name, diag in d.items():
        flagged = [f"{m['name']} ({', '.join(m['flags'])})" for m in diag["models"] if m["flags"]]
        print(f"  {name}: {', '.join(flagged) if flagged else 'nothing flagged'}")
    if summary["conditioned"]:
        print("\nDisTaC conditioning:")
        rows = [[c["task"], c["kappa"], c["norm_before"], c["norm_after"], c["entropy_before"], c["entropy_after"],
                 c["accuracy_before"], c["accuracy_rescaled_only"], c["accuracy_after"]] for c in summary["conditioned"]]
        print(table(["model", "kappa", "norm before", "norm after", "H before", "H after", "acc teacher",
                     "acc rescaled", "acc DisTaC"], rows))
    print("\n" + summary["table_markdown"])
    if len(summary["norm_mismatch_runs"]) > 1:
        print("\nnorm mismatch, run by run (mean normalised accuracy %, without -> with DisTaC):")
        methods = summary["methods"]
        print(table(["high-LR task", *methods],
                    [[r["task"], *(f"{r['table']['norm mismatch'][m]['mean_normalized_accuracy']:.1f} -> "
                                   f"{r['table']['norm mismatch + DisTaC'][m]['mean_normalized_accuracy']:.1f}"
                                   for m in methods)] for r in summary["norm_mismatch_runs"]]))
    if summary["kappa_sweep"]:
        print("\nkappa sweep (task arithmetic, naive rescaling):")
        print(table(["mode", "multiple", "kappa", "alpha", "mean acc", "mean norm. acc"],
                    [[r["mode"], r["multiple"], r["kappa"], r["alpha"], r["mean_accuracy"],
                      r["mean_normalized_accuracy"]] for r in summary["kappa_sweep"]]))
    print(f"\nwrote {cfg.directory} in {summary['total_s']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in summary['timings_s'].items())})")
    if summary.get("step_cpu_s"):
        print("steps' CPU: " + ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in summary["step_cpu_s"].items()))
    return 0


COMMAND = Command(
    "demo",
    "diagnose, condition with DisTaC, merge and compare on the built-in example suite (offline, minutes)",
    """\
      hfdistac demo                       # builds ./hfdistac-demo/example-suite, then everything else
      hfdistac demo out --suite example-suite --condition-steps 200
      hfdistac demo out --suite example-suite --mismatch-tasks digits --methods task_arithmetic tsvm
      hfdistac demo out --suite example-suite --workers 4  # 4 processes of one thread (default: free cores)""",
    DemoConfig,
    _run,
)

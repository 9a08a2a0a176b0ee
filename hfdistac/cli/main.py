"""``hfdistac`` entry point.

Errors that users cause print one line (``error: ...``) plus a hint and exit with status 2; unexpected
errors exit 1 with a one-line summary. Set ``HFDISTAC_DEBUG=1`` to see full tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

from .. import __version__
from ..errors import HfDistacError
from .args import add_dataclass_arguments, config_from_args

logger = logging.getLogger("hfdistac")


@dataclass(frozen=True)
class Command:
    """A subcommand: its config dataclass, the function that runs it, and its help texts."""

    name: str
    summary: str
    examples: str
    config_cls: type
    run: Callable[[object], int]
    uses_torch: bool = True


def _cmd_inspect(cfg) -> int:
    from ..diagnosis import run_inspect
    from .format import inspect_table

    diagnosis = run_inspect(cfg)
    print(inspect_table(diagnosis))
    if cfg.output:
        print(f"\nwrote {cfg.output}")
    return 0


def _cmd_evaluate(cfg) -> int:
    from ..evaluation import run_evaluate
    from ..tables import table

    res = run_evaluate(cfg)
    keys = [k for k in ("accuracy", "entropy", "max_prob", "ece", "n") if k in res]
    print(table(["model", "dataset", "split", *keys], [[res["model"], res["dataset"], res["split"],
                                                         *[res[k] for k in keys]]]))
    if cfg.json:
        print(f"wrote {cfg.json}")
    return 0


# Command modules living beside this one, each exposing ``COMMAND: Command``, in --help order.
COMMAND_MODULES = ("cmd_run", "cmd_condition", "cmd_merge", "cmd_card", "cmd_push", "cmd_example_suite", "cmd_demo")


def _commands() -> list[Command]:
    import importlib

    from ..configs import EvaluateConfig, InspectConfig

    extra = []
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{name}":
                raise
            continue
        extra.append(module.COMMAND)
    core = [
        Command("inspect", "diagnose task vectors: norms, entropy, calibration, and what DisTaC should do",
                """\
                  hfdistac inspect --base openai/clip-vit-base-patch32 \\
                      tanganke/clip-vit-base-patch32_svhn tanganke/clip-vit-base-patch32_mnist
                  hfdistac inspect example-suite/recipes/norm-mismatch.yaml --output inspect-out
                  hfdistac inspect ./my-finetuned --base ./clip-base --data ./my-dataset --json diag.json""",
                InspectConfig, _cmd_inspect),
        Command("evaluate", "accuracy, mean entropy and ECE of any model with its zero-shot task head",
                """\
                  hfdistac evaluate tanganke/clip-vit-base-patch32_svhn --data ufldl-stanford/svhn \\
                      --dataset-config cropped_digits --base openai/clip-vit-base-patch32
                  hfdistac evaluate example-suite/models/digits --json metrics.json""",
                EvaluateConfig, _cmd_evaluate),
    ]
    return [*core, *extra]


def build_parser() -> argparse.ArgumentParser:
    """The full parser (used by ``main`` and by the ``--help`` tests)."""
    parser = argparse.ArgumentParser(
        prog="hfdistac",
        description="Hub-native robust model merging for CLIP vision towers: diagnose task vectors, "
                    "condition them with DisTaC, merge, evaluate and publish.",
        epilog="Run 'hfdistac COMMAND --help' for a command's options and examples. "
               "Set HFDISTAC_DEBUG=1 for tracebacks.",
    )
    parser.add_argument("--version", action="version", version=f"hfdistac {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in _commands():
        p = sub.add_parser(cmd.name, help=cmd.summary, description=cmd.summary,
                           epilog="examples:\n" + textwrap.dedent(cmd.examples),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_dataclass_arguments(p, cmd.config_cls)
        p.add_argument("--config", metavar="FILE", help="YAML file of option values (flags override it)")
        p.add_argument("-v", "--verbose", action="store_true", help="log more (INFO level, library warnings)")
        if cmd.uses_torch:
            p.add_argument("--threads", type=int, default=0, metavar="N",
                           help="torch threads of this process (default 0: the cores no other process is busy on; "
                                "on a loaded machine torch's own default, every core, can be 10x slower)")
        p.set_defaults(_command=cmd)
    return parser


class _StderrHandler(logging.Handler):
    """Plain messages to the current ``sys.stderr`` (looked up at every record, so redirections apply)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(record.getMessage(), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never fail a command
            self.handleError(record)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # What a long job will cost (e.g. merge's forward-pass count and time estimate) is always shown.
    progress = logging.getLogger("hfdistac.progress")
    progress.setLevel(logging.INFO)
    if not progress.handlers:
        progress.addHandler(_StderrHandler())
        progress.propagate = False
    if not verbose:
        # The HF stack is chatty (load reports, per-split progress bars); our own bars show progress.
        try:
            import transformers

            transformers.utils.logging.set_verbosity_error()
            transformers.utils.logging.disable_progress_bar()
        except Exception:  # noqa: BLE001 - logging setup must never fail a command
            pass
        try:
            import datasets

            datasets.disable_progress_bars()
            datasets.logging.set_verbosity_error()
        except Exception:  # noqa: BLE001
            pass
        import warnings

        warnings.filterwarnings("ignore")


def _debug_traceback(error: BaseException, code: int) -> int:
    """``HFDISTAC_DEBUG=1``: the whole traceback, chained exceptions included, with every Hub token scrubbed (an
    HTTP error deep in a chain can quote the Authorization header)."""
    import traceback

    from ..hub import scrub_secrets

    print(scrub_secrets("".join(traceback.format_exception(error))), file=sys.stderr, end="")
    return code


#: Commands that split their work over the processes of ``accelerate launch`` / ``torchrun``.
MULTI_PROCESS_COMMANDS = ("condition", "merge", "run")


def check_launch(command: str, environ=os.environ) -> None:
    """Refuse a launch that asked for several processes and got one.

    ``accelerate launch --num_processes N`` on a machine without several GPUs starts *one* process unless
    ``--multi_gpu`` is given; it then sets ``MASTER_ADDR`` (it was asked for more than one) but no ``WORLD_SIZE``.

    Raises:
        InputError: that launch, with the command line that starts N processes.
    """
    from ..errors import InputError

    launched = "ACCELERATE_MIXED_PRECISION" in environ and "MASTER_ADDR" in environ
    if command in MULTI_PROCESS_COMMANDS and launched and "WORLD_SIZE" not in environ:
        raise InputError(
            "accelerate launch was asked for several processes (--num_processes > 1) but started only this one: "
            "without --multi_gpu it starts one process unless it finds several GPUs",
            f"on GPUs: accelerate launch --multi_gpu --num_processes N -m hfdistac.cli {command} ...; on CPUs: "
            f"ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N -m hfdistac.cli {command} ...; "
            "or drop --num_processes for one process")


def _launch_share() -> int:
    """Under a launch of several processes on one machine: each process's share of the cores (the others are about
    to be busy too, so the free cores would be counted before they start); else 0 (the default)."""
    from ..runtime import available_cores

    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, available_cores() // local) if local > 1 else 0


def is_main_process() -> bool:
    """Whether this process prints results (rank 0 of a launch, or the only process)."""
    from ..distributed import is_main

    return is_main()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_command", None):
        parser.print_help()
        return 2
    debug = os.environ.get("HFDISTAC_DEBUG", "") not in ("", "0")
    _configure_logging(args.verbose or debug)
    if os.environ.get("RANK", "0") != "0":  # a launch's other processes: errors only, the main process reports
        logging.getLogger("hfdistac").setLevel(logging.ERROR)
        logging.getLogger("hfdistac.progress").setLevel(logging.ERROR)
    cmd: Command = args._command
    code = 1
    try:
        code = _run(cmd, args, debug)
        return code
    finally:
        if "torch" in sys.modules:  # a command that never loaded torch joined no process group
            from ..distributed import finish

            finish(wait=code == 0)  # leave a launch's process group before the interpreter ends


def _run(cmd: Command, args: argparse.Namespace, debug: bool) -> int:
    """Run one parsed command; returns the exit status, with every error turned into one message."""
    try:
        check_launch(cmd.name)
        cfg = config_from_args(cmd.config_cls, args, args.config)
        if cmd.uses_torch:
            from ..errors import InputError
            from ..runtime import set_threads, tune_allocator

            tune_allocator()
            if args.threads < 0:
                raise InputError(f"--threads must be >= 0 (0 = the free cores), got {args.threads}")
            set_threads(args.threads or _launch_share())
        return cmd.run(cfg)
    except HfDistacError as e:
        if debug:
            return _debug_traceback(e, e.exit_code)
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - last resort: one line, not a traceback
        if debug:
            return _debug_traceback(e, 1)
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"error: unexpected {type(e).__name__}: {first}", file=sys.stderr)
        print("hint: rerun with HFDISTAC_DEBUG=1 for the traceback, and report it if it looks like a bug",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

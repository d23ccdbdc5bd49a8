"""``python -m search``: parse arguments, call one function, turn user mistakes into one clear line."""
from __future__ import annotations

import argparse
import sys

from supernet import ConfigError, UnsupportedModel


def _run(args: argparse.Namespace) -> None:
    from .run import prepare_and_report

    prepare_and_report(config_path=args.config, budget_ms=args.budget_ms, device=args.device,
                       batch_size=args.batch_size, threads=args.threads, out=args.out)


def _train_supernet(args: argparse.Namespace) -> None:
    from evaluators import resolve_device
    from supernet import distributed as ddp

    from .run import train_supernet_command

    ddp.init_from_env(resolve_device(args.device))  # under torchrun: join the process group
    log = print if ddp.is_main() else (lambda *_: None)
    train_supernet_command(config_path=args.config, method=args.method, epochs=args.epochs, device=args.device,
                           out=args.out, log=log)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m search",
                                     description="Latency-constrained architecture search for ViTs.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="prepare the base model and supernet, then search under a latency budget")
    run.add_argument("--budget-ms", type=float, required=True, help="latency budget of one forward pass, ms")
    run.add_argument("--config", default=None, help="workload YAML (default: the bundled configs/default.yaml)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    run.add_argument("--batch-size", type=int, default=1, help="batch size the latency is measured at")
    run.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's default)")
    run.add_argument("--out", default=None, help="output folder (default: results/<config name>)")
    run.set_defaults(func=_run)
    train = sub.add_parser("train-supernet", help="the gradient phase: gate methods, importance ordering, "
                                                   "sandwich training (resumable; runs under torchrun)")
    train.add_argument("--config", default=None, help="workload YAML (default: the bundled configs/default.yaml)")
    train.add_argument("--method", default=None, help="all, or one or more (comma-separated) of vtp, vitslim, "
                       "nvit, wdpruning, spvit, dynamicvit, patchslim (default: the config's supernet.method)")
    train.add_argument("--epochs", type=int, default=None,
                       help="sandwich epochs (default: the config's supernet.epochs)")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    train.add_argument("--out", default=None, help="output folder (default: the cache folder `run` reads, "
                       "under $VITNAS_CACHE/supernet)")
    train.set_defaults(func=_train_supernet)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "budget_ms", 1) <= 0:
        print("error: --budget-ms must be positive", file=sys.stderr)
        return 2
    try:
        args.func(args)
    except (ConfigError, UnsupportedModel, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; cached work (base model, latency table) is kept", file=sys.stderr)
        return 130
    return 0

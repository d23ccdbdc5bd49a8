"""``python -m search``: parse arguments, call one function, turn user mistakes into one clear line."""
from __future__ import annotations

import argparse
import sys

from supernet import ConfigError


LATENCY_FLAGS = ("device", "runtime", "dtype", "batch_size", "threads")


def _latency(args: argparse.Namespace) -> dict:
    """The measurement values given on the command line (None: the config's ``latency:`` section decides)."""
    return {k: getattr(args, k) for k in LATENCY_FLAGS}


def _run(args: argparse.Namespace) -> None:
    from .run import search_command

    search_command(config_path=args.config, budget_ms=args.budget_ms, latency=_latency(args), trials=args.trials,
                   timeout=args.timeout, sampler=args.sampler, seed=args.seed, storage=args.storage,
                   study_name=args.study, workers=args.workers, retrain_top=args.retrain_top, out=args.out)


def _worker(args: argparse.Namespace) -> None:
    from .run import worker_command

    worker_command(args.storage, args.study, args.trials, _latency(args))


def _retrain(args: argparse.Namespace) -> None:
    from .retrain import retrain_command

    retrain_command(args.target, args.trial, args.epochs, args.out, args.config, _latency(args))


def _redistribute(args: argparse.Namespace) -> None:
    from .redistribute import redistribute_command

    redistribute_command(args.subnet, args.budget_ms, args.config, args.epochs, _latency(args), args.out)


def _show(args: argparse.Namespace) -> None:
    from .results import load_results

    r = load_results(args.results)
    cols = [c for c in ("number", "val_top1", "test_top1", "measured_ms", "remeasured_ms", "pooled_ms",
                        "remeasured_ratio", "predicted_ms", "flops", "params", "embed_dim", "depth") if c in r.pareto]
    print(f"{args.results}: {len(r.trials)} trials, {len(r.pareto)} on the Pareto front")
    print(r.pareto[cols].to_string(index=False))


def _export(args: argparse.Namespace) -> None:
    from .export import export_command

    export_command(args.results, args.trial, args.to, _latency(args))


def _train_supernet(args: argparse.Namespace) -> None:
    from evaluators import resolve_device
    from supernet import distributed as ddp

    from .run import train_supernet_command

    ddp.init_from_env(resolve_device(args.device))  # under torchrun: join the process group
    log = print if ddp.is_main() else (lambda *_: None)
    train_supernet_command(config_path=args.config, method=args.method, epochs=args.epochs, latency=_latency(args),
                           out=args.out, log=log)


def add_latency_args(parser: argparse.ArgumentParser, device_default: str | None = "auto") -> None:
    """The measurement setting's flags; each overrides the config's ``latency:`` section."""
    from evaluators.runtimes import RUNTIMES

    g = parser.add_argument_group("latency measurement (overrides the config's latency: section)")
    g.add_argument("--device", default=device_default, help="auto, cpu, cuda or cuda:N (default: auto)")
    g.add_argument("--runtime", default=None, choices=["auto", *RUNTIMES], help="what the latency is measured in, "
                   "i.e. what you deploy with. auto (default): torch-eager on a CPU, cudagraph on a GPU, because at "
                   "small batch eager CUDA times kernel launches, not the model. " +
                   "; ".join(f"{n}: {c.summary}" for n, c in RUNTIMES.items()))
    g.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="precision of the timed model (default float32; float16/bfloat16 where the runtime runs them)")
    g.add_argument("--batch-size", type=int, default=None, help="batch size the latency is measured at (default 1)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's default)")


def build_parser() -> argparse.ArgumentParser:
    from supernet.gates import METHODS

    from .optimize import DEFAULT_SAMPLER, SAMPLERS

    parser = argparse.ArgumentParser(prog="python -m search",
                                     description="Latency-constrained architecture search for ViTs.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="prepare the base model and supernet, then search under a latency budget")
    run.add_argument("--budget-ms", type=float, required=True, help="latency budget of one forward pass, ms")
    run.add_argument("--config", default=None, help="workload YAML (default: the bundled configs/default.yaml)")
    run.add_argument("--trials", type=int, default=100, help="trials in the study, all workers together")
    run.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    run.add_argument("--sampler", default=DEFAULT_SAMPLER,
                     help=f"the Optuna sampler: {', '.join(SAMPLERS)} (default {DEFAULT_SAMPLER}: small moves around "
                     "the best configs so far; measured better than NSGA-II's crossover here)")
    run.add_argument("--seed", type=int, default=0, help="sampler seed")
    run.add_argument("--storage", default=None, help="Optuna storage URL, e.g. postgresql://user@host/db "
                     "(default: sqlite in the output folder)")
    run.add_argument("--study", default=None, help="study name (default: the output folder's name)")
    run.add_argument("--workers", type=int, default=1, help="local processes running trials on one storage")
    run.add_argument("--retrain-top", type=int, default=1,
                     help="retrain the K most accurate configs that met the budget and ship the best that still "
                     "meets it in a fresh process to <out>/best/ (default 1; 0: hand over the shared-weight "
                     "winner, best.yaml, without retraining)")
    run.add_argument("--out", default=None, help="output folder (default: results/<study or config name>)")
    add_latency_args(run)
    run.set_defaults(func=_run)
    retrain = sub.add_parser("retrain", help="extract a subnet and fine-tune it with distillation from the base")
    retrain.add_argument("target", help="a subnet YAML, or a search's output folder (with --trial)")
    retrain.add_argument("--trial", type=int, default=None, help="trial number in the results folder")
    retrain.add_argument("--epochs", type=int, default=None, help="epochs (default: the config's retrain.epochs)")
    retrain.add_argument("--config", default=None, help="workload YAML (default: the search's, or the bundled)")
    retrain.add_argument("--out", default=None, help="output folder (default: results/<config>/retrain-...)")
    add_latency_args(retrain)
    retrain.set_defaults(func=_retrain)
    worker = sub.add_parser("worker", help="join a study on a shared storage and run its trials")
    worker.add_argument("--storage", required=True, help="the study's storage URL")
    worker.add_argument("--study", required=True, help="the study's name")
    worker.add_argument("--trials", type=int, default=None, help="stop when the study has this many trials")
    add_latency_args(worker, device_default=None)
    worker.set_defaults(func=_worker)
    redis = sub.add_parser("redistribute", help="NViT redistribution: smooth a config's shape across depth, "
                           "rescale it to the budget, retrain both and compare")
    redis.add_argument("subnet", help="a subnet YAML (e.g. results/default/best.yaml)")
    redis.add_argument("--budget-ms", type=float, default=None,
                       help="predicted latency to rescale to (default: the config's own prediction)")
    redis.add_argument("--epochs", type=int, default=None, help="retrain epochs (default: retrain.epochs)")
    redis.add_argument("--config", default=None, help="workload YAML (default: the bundled configs/default.yaml)")
    redis.add_argument("--out", default=None, help="output folder")
    add_latency_args(redis)
    redis.set_defaults(func=_redistribute)
    show = sub.add_parser("show", help="print a search's Pareto front")
    show.add_argument("results", help="a search's output folder")
    show.set_defaults(func=_show)
    export = sub.add_parser("export", help="write a trial's config, extracted model (safetensors) and ONNX")
    export.add_argument("results", help="a search's output folder")
    export.add_argument("--trial", type=int, required=True, help="trial number (see `show`)")
    export.add_argument("--to", required=True, help="folder to write into")
    add_latency_args(export, device_default=None)
    export.set_defaults(func=_export)
    train = sub.add_parser("train-supernet", help="the gradient phase: gate methods, importance ordering, "
                                                   "sandwich training (resumable; runs under torchrun)")
    train.add_argument("--config", default=None, help="workload YAML (default: the bundled configs/default.yaml)")
    train.add_argument("--method", default=None, help=f"all, or one or more (comma-separated) of {', '.join(METHODS)} "
                       "(default: the config's supernet.method)")
    train.add_argument("--epochs", type=int, default=None,
                       help="sandwich epochs (default: the config's supernet.epochs)")
    train.add_argument("--out", default=None, help="output folder (default: the cache folder `run` reads, "
                       "under $VITNAS_CACHE/supernet)")
    add_latency_args(train)
    train.set_defaults(func=_train_supernet)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ConfigError as e:  # the user's input; anything else is a bug and shows its traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; cached work (base model, latency table) is kept", file=sys.stderr)
        return 130
    return 0

"""`python -m auxcli.perf bench|parity|sharing`: the measurements without pydantic, MLflow or DVC.

    python -m auxcli.perf bench --backbone resnet --depth 110 --steps 50 --device cuda [--format json]
    python -m auxcli.perf parity --device cuda --epochs 15
    python -m auxcli.perf sharing --processes 1 2 4 -- --backbone resnet --depth 110 --steps 50
"""

from __future__ import annotations

import argparse
import json
import sys

from auxcli.errors import AuxcliError
from auxcli.perf.measure import DEFAULT_MODELS, ModelChoice, Recipe, RuntimeChoice, format_text, run_bench


def whole_number(minimum: int):
    """An argparse type: an int >= `minimum`, else argparse's usage error (exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value
    return parse


POSITIVE, NON_NEGATIVE = whole_number(1), whole_number(0)


def add_bench_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", default="resnet", choices=["resnet", "pyramidnet", "linear"])
    parser.add_argument("--depth", type=POSITIVE, default=None, help="6n+2 (default 20; none for linear)")
    parser.add_argument("--alpha", type=float, default=None, help="PyramidNet widening factor (default 270)")
    parser.add_argument("--base-width", type=POSITIVE, default=16)
    parser.add_argument("--batch-size", type=POSITIVE, default=128)
    parser.add_argument("--steps", type=POSITIVE, default=20, help="batches per timed pass")
    parser.add_argument("--repeats", type=POSITIVE, default=3, help="timed passes (the median is reported)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--compile-mode", default="auto")
    parser.add_argument("--threads", type=POSITIVE, default=None)
    parser.add_argument("--workers", type=NON_NEGATIVE, default=None, help="reference DataLoader workers")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference loop")
    parser.add_argument("--format", default="text", choices=["text", "json"])


def model_choice(args: argparse.Namespace) -> ModelChoice:
    if args.backbone == "linear":
        return ModelChoice("linear", None, None, args.base_width)
    default = DEFAULT_MODELS[args.backbone]
    alpha = args.alpha if args.alpha is not None else default.get("alpha")
    return ModelChoice(args.backbone, args.depth or int(default["depth"]), alpha, args.base_width)


def cpu_share(bench_args: list[str], processes: int) -> list[str]:
    """`--threads` for one of `processes` bench processes, as `auxcli run --concurrent` shares the cores out
    (`auxcli.train.runtime.threads_per_process`); nothing on a GPU or when the bench args give --threads."""
    import torch

    from auxcli.train.runtime import threads_per_process

    parser = argparse.ArgumentParser(add_help=False)
    add_bench_options(parser)
    bench = parser.parse_args(bench_args)
    threads = threads_per_process(bench.device, bench.threads, processes=processes, cores=torch.get_num_threads(),
                                  cuda_available=torch.cuda.is_available())
    return ["--threads", str(threads)] if threads else []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m auxcli.perf", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_bench_options(commands.add_parser("bench", help="reference loop vs model-only vs end to end"))
    parity = commands.add_parser("parity", help="ResNet-20 fp32 vs bf16 test accuracy")
    parity.add_argument("--device", default="auto")
    parity.add_argument("--depth", type=POSITIVE, default=20)
    parity.add_argument("--epochs", type=POSITIVE, default=15)
    parity.add_argument("--train-images", type=POSITIVE, default=20_000)
    parity.add_argument("--test-images", type=POSITIVE, default=5_000)
    parity.add_argument("--seeds", type=NON_NEGATIVE, nargs="+", default=[0, 1])
    sharing = commands.add_parser("sharing", help="aggregate images/s of K processes on one device")
    sharing.add_argument("--processes", type=POSITIVE, nargs="+", default=[1, 2, 4])
    sharing.add_argument("--runs", type=POSITIVE, default=24, help="runs of the suite to time (Table 5: 24)")
    sharing.add_argument("--images-per-run", type=float, default=300 * 50_000, help="300 epochs of CIFAR")
    sharing.add_argument("bench_args", nargs=argparse.REMAINDER, help="-- then bench options")
    args = parser.parse_args(argv)
    from auxcli.perf.sharing import SharingFailed

    try:
        run(args)
    except (ValueError, AuxcliError) as exc:  # bad input the models or the runtime refuse: one line, exit 2
        parser.exit(2, f"{parser.prog} {args.command}: {exc}\n")
    except SharingFailed as exc:
        parser.exit(exc.exit_code, f"{parser.prog} {args.command}: {exc}\n")


def run(args: argparse.Namespace) -> None:
    if args.command == "bench":
        runtime = RuntimeChoice(device=args.device, precision=args.precision, channels_last=args.channels_last,
                                compile=args.compile, compile_mode=args.compile_mode, threads=args.threads)
        result = run_bench(model_choice(args), runtime, Recipe(batch_size=args.batch_size), steps=args.steps,
                           repeats=args.repeats, workers=args.workers, reference=not args.no_reference)
        print(json.dumps(result.as_json()) if args.format == "json" else format_text(result), flush=True)
    elif args.command == "parity":
        from auxcli.perf.parity import precision_parity

        runs, verdict = precision_parity(device=args.device, depth=args.depth, epochs=args.epochs,
                                         train_images=args.train_images, test_images=args.test_images,
                                         seeds=tuple(args.seeds))
        for run in runs:
            print(f"  {run.precision} seed {run.seed}: test acc {100 * run.test_acc:.2f}%  ({run.seconds:.0f} s)")
        print(f"  ResNet-{args.depth}, {args.epochs} epochs: {verdict}", flush=True)
    else:
        from auxcli.perf.sharing import measure_sharing

        bench_args = [a for a in args.bench_args if a != "--"]
        base = None
        for k in args.processes:
            result = measure_sharing(k, bench_args + cpu_share(bench_args, k))
            base = base or result.images_per_second / k
            hours = args.runs * args.images_per_run / result.images_per_second / 3600
            print(f"  {k} process(es): {result.images_per_second:10,.0f} images/s in total "
                  f"({result.images_per_second / base:.2f}x one; each "
                  + ", ".join(f"{r:,.0f}" for r in result.per_process) + f"; wall {result.wall_seconds:.0f} s); "
                  f"{args.runs} runs of {args.images_per_run:,.0f} images: {hours:.1f} h", flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""The `tensorforge` command line (also `python -m tensorforge`), in the manner of trtexec.

    tensorforge build MODEL -o out.tforge [--fp16|--bf16] [--batch N] ...   convert, partition, build, save
        (--shapes x:1x3x224x224, or --min-shapes/--opt-shapes/--max-shapes, instead of --batch: trtexec's
        optimization profile; also for bench, inspect and compare)
        (--int8 or --fp8 with --calib DIR_OR_NPZ [--calib-cache FILE]: post-training quantization, build and compare)
    tensorforge run PLAN --input x.npy|inputs.npz [--output y.npz]        run a saved module on arrays
    tensorforge bench PLAN|MODEL [--batch N] [--compare eager,compile]   latency, throughput, peak memory
    tensorforge inspect PLAN|MODEL [--json]                               regions, fallbacks, layers, tactics
    tensorforge compare MODEL [--fp16]                                    outputs against the source framework
    tensorforge serve PLAN [--instances K] [--http-port P]               serve behind Triton (PyTriton), cli/serve.py
    tensorforge export-triton PLAN REPO_DIR [--kind gpu|cpu]             a Triton model repository (Python backend)

MODEL is an `.onnx` file or a name of the zoo (`tensorforge.models`); PLAN a `.tforge` file written by
`build` (or `Module.save`). Every error is one line on stderr (`tensorforge: error: ...`) with a non-zero
exit code; `--verbose` adds the traceback. Results go to stdout, progress and warnings to stderr.
docs/cli.md documents every command.

The package, by concern: `sources` (where a model comes from, its inputs and outputs), `measure`
(latencies, peak memory), one module per command (`build`, `run`, `bench`, `inspection` for inspect, `compare`),
`common` (constants, CLIError); the parser and `main` live here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence

from .bench import cmd_bench
from .build import cmd_build
from .common import (
    COMPARE_METHODS,
    DEFAULT_SEQ_LEN,
    EXIT_ERROR,
    EXIT_MISMATCH,
    EXIT_USAGE,
    PROG,
    TOLERANCES,
    CLIError,
    bounded,
)
from .compare import cmd_compare
from .inspection import cmd_inspect
from .measure import measure_latencies
from .run import cmd_run
from .serve import add_serve_commands
from .sources import RANGE_FLAGS, Source, _shapes_arg, shape_profile

__all__ = [
    "main",
    "build_parser",
    "measure_latencies",
    "CLIError",
    "Source",
    "PROG",
    "TOLERANCES",
    "COMPARE_METHODS",
    "DEFAULT_SEQ_LEN",
    "EXIT_ERROR",
    "EXIT_USAGE",
    "EXIT_MISMATCH",
    "cmd_build",
    "cmd_run",
    "cmd_bench",
    "cmd_inspect",
    "cmd_compare",
    "cmd_models",
]


# -- the parser --------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line too (argparse prints the whole usage by default)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see `{self.prog} --help`)\n")


def _bytes_arg(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        value = int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of bytes (e.g. 1073741824, 512M, 1G), got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


_positive = bounded(int, "an integer", 1)
_level = bounded(int, "an integer from 0 to 5", 0, 5)


class _Given(argparse.Action):
    """Stores the value and records `<dest>_given`: a default alone cannot tell `--batch 1` from no --batch."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


def build_parser() -> argparse.ArgumentParser:
    # parents are only sources of arguments; they are _Parsers because the subcommands' parsers are
    common = _Parser(add_help=False)
    common.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks of errors, warnings of every library and tensorforge's log",
    )
    common.add_argument("--json", action="store_true", help="print the result as JSON on stdout")

    def model_options(batch_default: int | None = 1, device_help: str = "cuda if available, else cpu"):
        p = _Parser(add_help=False)
        precision = p.add_mutually_exclusive_group()
        precision.add_argument("--fp16", action="store_true", help="let layers run in float16")
        precision.add_argument("--bf16", action="store_true", help="let layers run in bfloat16")
        p.add_argument("--no-tf32", action="store_true", help="full float32 matrix products on the GPU (no TF32)")
        p.add_argument(
            "--strict-types",
            action="store_true",
            help="with --fp16/--bf16, run every float layer in it, sensitive ones included",
        )
        p.add_argument(
            "--optimization-level",
            type=_level,
            default=3,
            metavar="0-5",
            help="0: first supported tactic per layer; 1-5: time the candidates (4-5: wider search); default 3",
        )
        p.add_argument(
            "--timing-cache", default=None, metavar="FILE", help="JSON timing cache that builds read and extend"
        )
        p.add_argument(
            "--max-streams",
            type=_positive,
            default=4,
            metavar="N",
            help="CUDA streams a plan may spread independent branches over (1: one; default 4)",
        )
        p.add_argument(
            "--batch",
            type=_positive,
            default=batch_default,
            action=_Given,
            help=f"batch size the plans are built for: a batch-only profile (default {batch_default})",
        )
        p.set_defaults(batch_given=False)
        p.add_argument(
            "--shapes",
            type=_shapes_arg,
            default=None,
            metavar="NAME:SIZES,...",
            help="one fixed shape per input, as trtexec spells it: input_ids:1x128,attention_mask:1x128 "
            "(instead of --batch)",
        )
        for flag, which in zip(RANGE_FLAGS, ("smallest", "tuning (opt)", "largest")):
            p.add_argument(
                flag,
                type=_shapes_arg,
                default=None,
                metavar="NAME:SIZES,...",
                help=f"the {which} shape of each dynamic input (trtexec's spelling, e.g. x:1x3x224x224); "
                f"{', '.join(RANGE_FLAGS)} go together and make one optimization profile",
            )
        p.add_argument(
            "--seq-len",
            type=_positive,
            default=None,
            help="sequence length of text models (zoo default 128); sizes other symbols of ONNX inputs",
        )
        p.add_argument(
            "--image-size", type=_positive, default=None, help="image size of vision zoo models (default 224)"
        )
        p.add_argument("--cache-dir", default=None, help="cache built plans on disk here")
        p.add_argument("--min-block-size", type=_positive, default=1, help="smallest region offloaded (nodes)")
        p.add_argument(
            "--workspace",
            type=_bytes_arg,
            default=1 << 30,
            help="most activation memory a plan may use, in bytes (512M, 1G accepted; default 1G)",
        )
        p.add_argument(
            "--implicit-batch",
            action="store_true",
            help="partition in implicit-batch mode (ops that touch the batch axis stay in PyTorch)",
        )
        p.add_argument("--device", default=None, help=f"cpu or cuda[:N] (default {device_help})")
        p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
        # quantization flags belong to `build` and `compare` (add_quantization_flags); the others build unquantized
        p.set_defaults(int8=False, fp8=False, calib=None, calib_method=None, calib_cache=None, error_budget=None)
        return p

    def add_quantization_flags(p: argparse.ArgumentParser) -> None:
        quantized = p.add_mutually_exclusive_group()
        quantized.add_argument(
            "--int8", action="store_true", help="quantize to int8 with scales calibrated on --calib (TensorRT's Q/DQ)"
        )
        quantized.add_argument("--fp8", action="store_true", help="quantize to float8 (e4m3) with --calib's scales")
        p.add_argument(
            "--calib",
            default=None,
            metavar="DIR_OR_NPZ",
            help="calibration inputs for --int8/--fp8: an .npz (one batch, keys = input names) or a directory of them",
        )
        p.add_argument(
            "--calib-method",
            choices=("auto", "entropy", "minmax", "percentile"),
            default=None,
            help="how activation ranges are calibrated (default auto: every calibrator, the one closest to the float "
            "model on --calib kept)",
        )
        p.add_argument(
            "--calib-cache",
            default=None,
            metavar="FILE",
            help="calibration cache: reused when it exists and fits the model (then --calib may be left out), "
            "written after calibrating otherwise",
        )
        p.add_argument(
            "--error-budget",
            type=float,
            default=None,
            metavar="E",
            help="keep the most sensitive layers in floating point until the relative output error on --calib is "
            "at most E (e.g. 0.05)",
        )

    parser = _Parser(
        prog=PROG,
        description="Make trained models fast for inference: build, run, bench, "
        "inspect and compare tensorforge modules.",
        epilog="zoo models: run `tensorforge models`",
    )
    parser.add_argument("--verbose", "-v", action="store_true", default=False, help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "build",
        parents=[common, model_options()],
        help="convert, partition and build a model; save one .tforge",
        description="Convert MODEL, partition it, build every plan for --batch and save one .tforge file.",
    )
    p.add_argument("model", metavar="MODEL", help="an .onnx file or a zoo name (tensorforge models)")
    p.add_argument("-o", "--output", required=True, help="the .tforge file to write")
    add_quantization_flags(p)
    p.add_argument(
        "--rebuildable",
        action="store_true",
        help="also keep the regions' weights, so the plans can be rebuilt on another GPU or tensorforge "
        "version (about twice the file size)",
    )
    p.set_defaults(run=cmd_build)

    p = sub.add_parser(
        "run",
        parents=[common],
        help="run a .tforge on arrays from .npy/.npz",
        description="Load PLAN, feed it inputs, write or summarize its outputs.",
    )
    p.add_argument("plan", metavar="PLAN", help="a .tforge file")
    p.add_argument("--input", "-i", required=True, help=".npy (one-input models) or .npz (keys = input names)")
    p.add_argument("--output", "-o", default=None, help=".npz (keys = output names) or .npy (one output)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default cuda if available, else cpu)")
    p.set_defaults(run=cmd_run)

    p = sub.add_parser(
        "bench",
        parents=[common, model_options()],
        help="latency percentiles, throughput, peak memory",
        description="Time PLAN or MODEL: p50/p90/p99 latency, throughput and peak "
        "memory; with --compare, PyTorch eager / torch.compile / onnxruntime in the same run.",
    )
    p.add_argument("target", metavar="PLAN|MODEL", help="a .tforge file, an .onnx file or a zoo name")
    p.add_argument("--iters", type=_positive, default=100, help="timed iterations (default 100)")
    p.add_argument("--warmup", type=int, default=10, help="untimed iterations first (default 10)")
    p.add_argument(
        "--compare",
        default=None,
        metavar="METHODS",
        help="comma-separated: eager, compile (zoo models), onnxruntime (.onnx files)",
    )
    p.set_defaults(run=cmd_bench)

    p = sub.add_parser(
        "inspect",
        parents=[common, model_options(batch_default=None, device_help="cpu for MODEL")],
        help="regions, fallback reasons, layers, tactics, MACs, arena sizes",
        description="Show the regions, every reason a node stayed in PyTorch, the layers of each "
        "plan with their tactic and precision, MACs/FLOPs and arena sizes. For a MODEL the plans are "
        "built first (at --batch, default 1, on --device, default cpu).",
    )
    p.add_argument("target", metavar="PLAN|MODEL", help="a .tforge file, an .onnx file or a zoo name")
    p.add_argument(
        "--layers",
        type=int,
        default=None,
        metavar="N",
        help="show the first N layers of each plan (default all; -1 all)",
    )
    p.set_defaults(run=cmd_inspect)

    p = sub.add_parser(
        "compare",
        parents=[common, model_options()],
        help="outputs against the source framework",
        description="Build MODEL and compare its outputs with PyTorch eager (zoo models, float32) or "
        "onnxruntime (.onnx files). Exit code 3 when an output's max relative error exceeds the "
        f"tolerance ({', '.join(f'{k} {v:g}' for k, v in TOLERANCES.items())}).",
    )
    p.add_argument("model", metavar="MODEL", help="an .onnx file or a zoo name")
    p.add_argument("--rtol", type=float, default=None, help="tolerance on max |a - e| / max |e| (default by precision)")
    add_quantization_flags(p)
    p.add_argument(
        "--per-layer",
        action="store_true",
        help="with --int8/--fp8 and --calib: each layer's output error when it alone is quantized, worst first",
    )
    p.set_defaults(run=cmd_compare)

    p = sub.add_parser("models", parents=[common], help="list the zoo models", description="List the zoo models.")
    p.set_defaults(run=cmd_models)

    add_serve_commands(sub, common)  # serve, export-triton
    return parser


def cmd_models(args) -> int:
    from .. import models

    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": e.name,
                        "family": e.family,
                        "description": e.description,
                        "inputs": list(e.input_names),
                        "outputs": list(e.output_names),
                    }
                    for e in models.ZOO.values()
                ],
                indent=2,
            )
        )
    else:
        print(models.describe())
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tensorforge")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


# -- main --------------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError) and text.startswith(("'", '"')):
        text = text[1:-1]
    line = "; ".join(part.strip() for part in text.splitlines() if part.strip())  # one line, nothing lost
    if not isinstance(exc, (CLIError, OSError, ValueError, TypeError, NotImplementedError)):
        line = f"{type(exc).__name__}: {line}"  # an unexpected error: say what kind
    return line


class _LogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbose = getattr(args, "verbose", False)
    if hasattr(args, "shapes"):  # flags that only make sense together (or apart) are usage errors too
        try:
            shape_profile(args)
        except CLIError as exc:
            parser.error(str(exc))
    if getattr(args, "layers", None) == -1:
        args.layers = None

    def show_warning(message, category, filename, lineno, file=None, line=None):
        if args.verbose or f"{os.sep}tensorforge{os.sep}" in filename:
            print(f"{PROG}: warning: {message}", file=sys.stderr)

    logger = logging.getLogger("tensorforge")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if args.verbose else logging.WARNING)
    previous = warnings.showwarning
    warnings.showwarning = show_warning
    # as with Python warnings, other libraries' notices reach the terminal only with --verbose: torch logs one per Enum
    # that a library importing itself registers with pytree (torchao does, when transformers imports it)
    pytree_log = logging.getLogger("torch.utils._pytree")
    pytree_level = pytree_log.level
    if not args.verbose:
        pytree_log.setLevel(logging.ERROR)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (`tensorforge inspect m.tforge --json | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001  (the command line reports any error as one line and an exit code)
        if args.verbose:
            traceback.print_exc()
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        warnings.showwarning = previous
        pytree_log.setLevel(pytree_level)
        logger.removeHandler(handler)

"""trtexec's shape flags: `--shapes name:1x128,...` (one fixed shape) and `--min-shapes/--opt-shapes/--max-shapes`
(a range; all three or none), parsed in one place (cli/sources.py) into the per-input profile that RuntimeOptions
carries; example inputs are made at the profile's opt; `--batch` alone keeps its meaning (a batch-only profile)."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from cli.conftest import TinyNet
from tensorforge import ir
from tensorforge.cli import build_parser, main
from tensorforge.cli.common import EXIT_USAGE, CLIError
from tensorforge.cli.sources import Source, _example_env, _runtime_options, _source_inputs, parse_shapes, shape_profile
from tensorforge.ir import SymExpr, TensorType
from tensorforge.runtime.options import InputShapes

batch, seq = SymExpr.symbol("batch"), SymExpr.symbol("seq")


def parse(*flags: str):
    return build_parser().parse_args(["build", "model.onnx", "-o", "m.tforge", *flags])


# -- parsing ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, shapes",
    [
        ("x:1x3x224x224", {"x": (1, 3, 224, 224)}),
        ("input_ids:1x128,attention_mask:1x128", {"input_ids": (1, 128), "attention_mask": (1, 128)}),
        (" ids:2x16 , mask:2x16 ", {"ids": (2, 16), "mask": (2, 16)}),
        ("input:0:1x3", {"input:0": (1, 3)}),  # TensorFlow-style names: the sizes follow the last ':'
        ("scale:4", {"scale": (4,)}),
        ("x:0x3", {"x": (0, 3)}),
    ],
    ids=["one", "two", "spaces", "colon-in-name", "rank-1", "zero"],
)
def test_parse_shapes_reads_trtexec_spelling(text, shapes):
    assert parse_shapes(text) == shapes


@pytest.mark.parametrize(
    "text, message",
    [
        ("x1x3", "token 'x1x3': expected NAME:SIZES"),
        (":1x3", "token ':1x3': expected NAME:SIZES"),
        ("x:1x3xa", "token 'x:1x3xa': input 'x' has 'a' where a size (a non-negative integer) is expected"),
        ("x:1x-3", "input 'x' has '-3' where a size"),
        ("x:1x3.5", "input 'x' has '3.5' where a size"),
        ("x:", "token 'x:': input 'x' has '' where a size"),
        ("x:1xx3", "input 'x' has '' where a size"),
        ("x:1,,y:2", "token '': expected NAME:SIZES"),
        ("x:1x3,x:2x3", "token 'x:2x3': input 'x' is given twice"),
        ("x:1x\uff13", "input 'x' has '\uff13' where a size"),
        ("", "expected NAME:SIZES for each input"),
    ],
    ids=[
        "no-colon",
        "no-name",
        "letter",
        "negative",
        "float",
        "no-sizes",
        "empty-size",
        "empty-token",
        "twice",
        "wide-digit",
        "empty",
    ],
)
def test_parse_shapes_names_the_bad_token_the_input_and_what_is_expected(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_shapes(text)


def test_a_bad_token_is_a_usage_error_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "model.onnx", "-o", "m.tforge", "--opt-shapes", "x:1x3xQ"])
    assert exit_info.value.code == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("tensorforge: error: argument --opt-shapes: token 'x:1x3xQ': input 'x' has 'Q'"), err
    assert len(err.splitlines()) == 1


# -- which flags go together ------------------------------------------------------------------------------------------


def test_shapes_is_one_fixed_profile():
    assert shape_profile(parse("--shapes", "ids:2x16,mask:2x16")) == {
        "ids": ((2, 16), (2, 16), (2, 16)),
        "mask": ((2, 16), (2, 16), (2, 16)),
    }


def test_min_opt_max_make_one_range_profile_per_input():
    args = parse("--min-shapes", "x:1x3x8x8", "--opt-shapes", "x:4x3x16x16", "--max-shapes", "x:8x3x32x32")
    assert shape_profile(args) == {"x": ((1, 3, 8, 8), (4, 3, 16, 16), (8, 3, 32, 32))}


def test_no_shape_flags_keep_the_batch_only_behaviour():
    args = parse("--batch", "4")
    assert shape_profile(args) is None and args.batch == 4 and args.batch_given
    assert _runtime_options(args).profiles is None
    assert not parse().batch_given and parse().batch == 1


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--shapes", "x:1x3", "--min-shapes", "x:1x3"], "--shapes gives one fixed shape and --min-shapes a range"),
        (["--batch", "2", "--shapes", "x:1x3"], "--batch and --shapes both size the batch: drop --batch"),
        (["--batch", "1", "--min-shapes", "x:1", "--opt-shapes", "x:1", "--max-shapes", "x:1"], "--batch and --min"),
        (["--min-shapes", "x:1x3", "--max-shapes", "x:4x3"], "--min-shapes, --max-shapes without --opt-shapes: give"),
        (["--opt-shapes", "x:1x3"], "--opt-shapes without --min-shapes, --max-shapes"),
        (
            ["--min-shapes", "x:1x3", "--opt-shapes", "x:2x3,y:2", "--max-shapes", "x:4x3,y:4"],
            "input 'y' has no shape in --min-shapes",
        ),
        (
            ["--min-shapes", "x:1x3,z:1", "--opt-shapes", "x:2x3", "--max-shapes", "x:4x3"],
            "input 'z' of --min-shapes has no shape in --opt-shapes",
        ),
        (
            ["--min-shapes", "x:1x3", "--opt-shapes", "x:2x3", "--max-shapes", "x:4x3x2"],
            "input 'x': its min, opt and max shapes must have one rank, got 1x3, 2x3, 4x3x2",
        ),
        (
            ["--min-shapes", "x:1x30", "--opt-shapes", "x:2x3", "--max-shapes", "x:4x3"],
            "input 'x' axis 1: the sizes must satisfy min <= opt <= max, got 30, 3, 3",
        ),
    ],
    ids=[
        "shapes-and-range",
        "batch-and-shapes",
        "batch-and-range",
        "no-opt",
        "only-opt",
        "missing",
        "extra",
        "rank",
        "order",
    ],
)
def test_flags_that_do_not_go_together_are_refused(flags, message, capsys):
    with pytest.raises(CLIError, match=re.escape(message)):
        shape_profile(parse(*flags))
    with pytest.raises(SystemExit) as exit_info:  # through main: a usage error, one line
        main(["build", "model.onnx", "-o", "m.tforge", *flags])
    assert exit_info.value.code == EXIT_USAGE
    assert capsys.readouterr().err.count("\n") == 1


def test_every_command_with_batch_takes_the_shape_flags():
    for command in (
        ["build", "m.onnx", "-o", "m.tforge"],
        ["bench", "m.onnx"],
        ["compare", "m.onnx"],
        ["inspect", "m.onnx"],
    ):
        args = build_parser().parse_args([*command, "--shapes", "x:2x3"])
        assert shape_profile(args) == {"x": ((2, 3), (2, 3), (2, 3))}, command[0]
    with pytest.raises(SystemExit):  # run takes a saved module and its arrays: no shapes to choose
        build_parser().parse_args(["run", "m.tforge", "--input", "x.npy", "--shapes", "x:2x3"])


# -- options and example inputs ----------------------------------------------------------------------------------------


def test_the_options_carry_the_profile():
    args = parse("--min-shapes", "ids:1x8", "--opt-shapes", "ids:8x128", "--max-shapes", "ids:32x512", "--fp16")
    options = _runtime_options(args)
    assert options.profiles == (InputShapes((("ids", ((1, 8), (8, 128), (32, 512))),)),)
    assert options.builder_config.fp16


def token_graph() -> ir.Graph:
    g = ir.Graph("tokens")
    ids = g.add_input("ids", TensorType("int64", (batch, seq)))
    mask = g.add_input("mask", TensorType("float32", (batch, seq)))
    g.set_outputs([g.call("multiply", g.call("cast", ids, dtype="float32"), mask)])
    return g.verify()


def test_example_inputs_are_made_at_the_profiles_opt():
    graph, source = token_graph(), Source("onnx", "tokens.onnx")
    args = parse("--min-shapes", "ids:1x8", "--opt-shapes", "ids:3x40", "--max-shapes", "ids:8x512")
    env = _example_env(graph, source, args)
    assert env == {"batch": 3, "seq": 40}
    ids, mask = _source_inputs(source, graph, env, "cpu")
    assert ids.shape == mask.shape == (3, 40) and ids.dtype == torch.int64 and mask.dtype == torch.float32
    fixed = parse("--shapes", "mask:5x7")  # one input binds both symbols for every input
    assert [t.shape for t in _source_inputs(source, graph, _example_env(graph, source, fixed), "cpu")] == [(5, 7)] * 2


def test_without_shape_flags_inputs_take_batch_and_seq_len_as_before():
    graph, source = token_graph(), Source("onnx", "tokens.onnx")
    assert _example_env(graph, source, parse("--batch", "2", "--seq-len", "9")) == {"batch": 2, "seq": 9}
    assert _example_env(graph, source, parse()) == {"batch": 1, "seq": 128}


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--shapes", "ids:2x16x1"], "the min shape (2, 16, 1) must have 2 dims"),
        (["--shapes", "idz:2x16"], "input(s) ['idz'] the graph lacks"),
        (["--shapes", "ids:2x16,mask:2x17"], "gives 'seq' the range (17, 17, 17)"),
    ],
)
def test_shapes_that_do_not_fit_the_graph_name_its_inputs(flags, message):
    with pytest.raises(CLIError, match="the shape flags do not fit tokens.onnx") as error:
        _example_env(token_graph(), Source("onnx", "tokens.onnx"), parse(*flags))
    assert message in str(error.value) and "its inputs: ids (i64[batch,seq]), mask (f32[batch,seq])" in str(error.value)


# -- end to end on ONNX files ----------------------------------------------------------------------------------------


class TokenNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.proj = torch.nn.Linear(16, 8)

    def forward(self, ids):
        return torch.nn.functional.gelu(self.proj(self.embed(ids))).mean(dim=1)


def export(model, example, path, input_name, axes) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=["out"],
            dynamic_axes={input_name: axes, "out": {0: "N"}},
            dynamo=False,
        )
    return str(path)


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("shapes")
    torch.manual_seed(0)
    return {
        "tiny": export(TinyNet().eval(), torch.randn(2, 3, 8, 8), d / "tiny.onnx", "image", {0: "N"}),
        "tokens": export(TokenNet().eval(), torch.randint(0, 50, (2, 6)), d / "tokens.onnx", "ids", {0: "N", 1: "S"}),
    }


def run_main(capsys, *argv) -> dict:
    code = main([*map(str, argv), "--device", "cpu", "--json", "-q"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_compare_runs_at_the_opt_shape_of_a_range(onnx_files, capsys):
    doc = run_main(
        capsys,
        "compare",
        onnx_files["tiny"],
        "--min-shapes",
        "image:1x3x8x8",
        "--opt-shapes",
        "image:3x3x8x8",
        "--max-shapes",
        "image:6x3x8x8",
    )
    assert doc["ok"] and doc["batch"] == 3 and doc["outputs"]["out"]["shape"] == [3, 5]
    assert doc["shapes"] == {"image": [[1, 3, 8, 8], [3, 3, 8, 8], [6, 3, 8, 8]]}


def test_fixed_shapes_size_a_symbolic_sequence_and_match_onnxruntime(onnx_files, capsys, tmp_path):
    doc = run_main(capsys, "compare", onnx_files["tokens"], "--shapes", "ids:2x11")
    assert doc["ok"] and doc["outputs"]["out"]["shape"] == [2, 8] and doc["batch"] == 2
    plan = tmp_path / "tokens.tforge"
    built = run_main(capsys, "build", onnx_files["tokens"], "-o", plan, "--shapes", "ids:2x11")
    assert built["shapes"] == {"ids": [[2, 11], [2, 11], [2, 11]]} and built["batch"] is None
    import tensorforge as forge

    module = forge.load(plan, device="cpu")
    assert module.options.profiles == (InputShapes((("ids", ((2, 11), (2, 11), (2, 11))),)),)
    ids = np.random.default_rng(0).integers(0, 50, (2, 11))
    (expected,) = ort.InferenceSession(onnx_files["tokens"], providers=["CPUExecutionProvider"]).run(None, {"ids": ids})
    np.testing.assert_allclose(module(torch.from_numpy(ids)).numpy(), expected, rtol=1e-4, atol=1e-6)


def test_shapes_that_contradict_a_zoo_model_say_which_flags_size_it(capsys, tmp_path):
    code = main(["build", "bert-tiny", "-o", str(tmp_path / "b.tforge"), "--shapes", "input_ids:2x64", "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "the shape flags do not fit bert-tiny" in err and "--seq-len" in err

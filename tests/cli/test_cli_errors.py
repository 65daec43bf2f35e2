"""Errors of the command line: one line on stderr (`tensorforge: error: ...`), a non-zero exit code, no
traceback unless --verbose. Every case runs through `cli.main` in-process (fast); the ones a user meets most
also through `python -m tensorforge` in a subprocess, so nothing printed at start-up or exit can hide."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

from cli.conftest import assert_ok, assert_one_line_error, tforge


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_plan):
    d = tmp_path_factory.mktemp("errors")
    (d / "garbage.tforge").write_bytes(b"this is not a tensorforge module" * 10)
    np.save(d / "x.npy", np.random.randn(2, 3, 8, 8).astype(np.float32))
    np.save(d / "x_wrong_shape.npy", np.random.randn(2, 3, 9, 9).astype(np.float32))
    np.save(d / "x_ints.npy", np.ones((2, 3, 8, 8), np.int64))
    np.savez(d / "wrong_key.npz", image=np.random.randn(2, 3, 8, 8).astype(np.float32))
    return {"dir": d, "plan": tiny_plan}


# (id, command with {dir} / {plan} placeholders, exit code, words the error line must contain)
SUBPROCESS = {
    "run-missing-plan",
    "build-missing-onnx",
    "run-garbage-plan",
    "run-wrong-input-key",
    "build-unknown-model",
}
CASES = [
    ("run-missing-plan", "run {dir}/missing.tforge --input {dir}/x.npy", 1, ["missing.tforge: no such file"]),
    ("run-missing-input", "run {plan} --device cpu --input {dir}/missing.npy", 1, ["missing.npy: no such file"]),
    ("build-missing-onnx", "build {dir}/missing.onnx -o {dir}/out.tforge", 1, ["missing.onnx: no such file"]),
    ("run-garbage-plan", "run {dir}/garbage.tforge --input {dir}/x.npy", 1, ["not a readable tensorforge module"]),
    ("inspect-garbage-plan", "inspect {dir}/garbage.tforge", 1, ["not a readable tensorforge module"]),
    ("bench-garbage-plan", "bench {dir}/garbage.tforge", 1, ["not a readable tensorforge module"]),
    (
        "run-wrong-input-key",
        "run {plan} --device cpu --input {dir}/wrong_key.npz",
        1,
        ["unknown input 'image'", "missing 'x'", "x (f32[batch,3,8,8])"],
    ),
    (
        "run-wrong-input-shape",
        "run {plan} --device cpu --input {dir}/x_wrong_shape.npy",
        1,
        ["input 'x'", "f32[batch,3,8,8]", "(2, 3, 9, 9)"],
    ),
    ("run-wrong-input-dtype", "run {plan} --device cpu --input {dir}/x_ints.npy", 1, ["expected float32", "got int64"]),
    (
        "build-unknown-model",
        "build resnet5000 -o {dir}/out.tforge",
        1,
        ["unknown model 'resnet5000'", "resnet50", "bert-tiny"],
    ),
    ("build-bad-output-name", "build bert-tiny -o {dir}/out.bin", 1, ["must end in .tforge"]),
    ("build-bad-image-size", "build vit_b_16 --image-size 40 -o {dir}/out.tforge", 1, ["multiple of 16"]),
    ("compare-takes-no-plan", "compare {plan}", 1, ["needs the source model"]),
    ("bench-compare-needs-model", "bench {plan} --compare eager", 1, ["--compare needs the source model"]),
    ("bench-compare-unknown-method", "bench bert-tiny --compare tensorrt", 1, ["--compare 'tensorrt'"]),
    ("run-needs-input", "run {plan}", 2, ["--input"]),
    ("unknown-command", "frobnicate", 2, ["invalid choice: 'frobnicate'"]),
    ("bad-batch", "build bert-tiny -o {dir}/o.tforge --batch 0", 2, ["--batch", "must be >= 1"]),
    ("bad-workspace", "build bert-tiny -o {dir}/o.tforge --workspace lots", 2, ["--workspace", "number of bytes"]),
]


def run_in_process(args, capsys) -> subprocess.CompletedProcess:
    from tensorforge.cli import main

    try:
        code = main(args)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


@pytest.mark.parametrize("command, code, needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_is_one_line(files, command, code, needles, capsys):
    args = command.format(dir=files["dir"], plan=files["plan"]).split()
    assert_one_line_error(run_in_process(args, capsys), *needles, code=code)


@pytest.mark.parametrize(
    "command, code, needles",
    [c[1:] for c in CASES if c[0] in SUBPROCESS],
    ids=[c[0] for c in CASES if c[0] in SUBPROCESS],
)
def test_error_is_one_line_from_the_command(files, command, code, needles):
    args = command.format(dir=files["dir"], plan=files["plan"]).split()
    assert_one_line_error(tforge(*args), *needles, code=code)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_a_gpu(files, capsys):
    result = run_in_process(["run", files["plan"], "--input", str(files["dir"] / "x.npy"), "--device", "cuda"], capsys)
    assert_one_line_error(result, "--device cuda: CUDA is not available on this machine (use --device cpu)")


def test_verbose_shows_the_traceback(files, capsys):
    result = tforge("run", files["dir"] / "garbage.tforge", "--input", files["dir"] / "x.npy", "--verbose")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and "ModuleFormatError" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("tensorforge: error: ")
    before = run_in_process(["--verbose", "inspect", str(files["dir"] / "garbage.tforge")], capsys)
    assert "Traceback" in before.stderr  # --verbose before the command works too


def test_run_npy_on_a_one_input_model(files, tiny_net, tmp_path):
    result = tforge(
        "run", files["plan"], "--input", files["dir"] / "x.npy", "--output", tmp_path / "y.npy", "--device", "cpu"
    )
    assert_ok(result)
    with torch.no_grad():
        expected = tiny_net(torch.from_numpy(np.load(files["dir"] / "x.npy")))
    actual = torch.from_numpy(np.load(tmp_path / "y.npy"))
    assert torch.allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_run_float64_arrays_are_cast_to_the_input_type(files, tmp_path):
    np.save(tmp_path / "x64.npy", np.random.randn(1, 3, 8, 8))  # float64, as numpy makes by default
    result = tforge("run", files["plan"], "--input", tmp_path / "x64.npy", "--json", "--device", "cpu")
    assert_ok(result)
    assert [row["shape"] for row in json.loads(result.stdout)["outputs"].values()] == [[1, 5]]


def test_output_names_from_a_file_are_safe_unique_archive_members():
    from tensorforge.cli.run import archive_names

    names = archive_names(["logits", "../../../tmp/x", "logits", "..", "a/b", "/abs"])
    assert names == ["logits", "_.._.._tmp_x", "logits_2", "output_3", "a_b", "_abs"]
    assert all("/" not in n and not n.startswith(".") for n in names) and len(set(names)) == len(names)


def test_a_scalar_input_stays_a_scalar(tmp_path):
    """silero-vad's sample rate is a 0-d input: an .npz scalar must reach the model as one, not as shape [1]."""
    from tensorforge.cli.sources import _read_inputs
    from tensorforge.ir import Graph, TensorType

    graph = Graph("scalar")
    graph.add_input("x", TensorType("float32", (2, 3)))
    graph.add_input("sr", TensorType("int64", ()))
    np.savez(tmp_path / "in.npz", x=np.ones((2, 3), np.float32), sr=np.array(16000))
    x, sr = _read_inputs(str(tmp_path / "in.npz"), graph, torch.device("cpu"))
    assert sr.shape == () and int(sr) == 16000 and x.shape == (2, 3)

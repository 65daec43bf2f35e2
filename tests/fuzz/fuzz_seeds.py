"""The fuzzer's seeds: small real models, compiled on CPU, written the way users get them.

`build_seeds(directory)` writes, for each torch seed model, the `.tforge` file with its plans built
(`module.build_all`), the same module saved before any plan was built (the cache kind loads it with a cache
directory), the plan-cache entries the build wrote, and the input and expected output the unmutated module
gives. The state_dict kind uses the `.tforge` bytes: `EngineModule.state_dict()` is one uint8 tensor holding
them. ONNX seeds are small graphs made with `onnx.helper` and one `torch.onnx.export`.

It also writes the code-execution canaries a hostile file would try to reach (`canaries`): a Python module
and, where a C compiler exists, a shared library; each leaves a file in `<root>/canary/` when it runs.
Everything is listed in `manifest.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

CANARY_MODULE = "fuzz_canary_payload"


# ---------------------------------------------------------------------------------------------
# torch seed models (small, so a case loads and runs in tens of milliseconds)
# ---------------------------------------------------------------------------------------------


class ConvNet(torch.nn.Module):
    """conv, batch norm, relu, a residual add, a pooled dense head."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv1(x)))
        y = torch.relu(self.conv2(y) + y)
        return self.fc(y.mean((2, 3)))


class OpaqueOpNet(torch.nn.Module):
    """torch.logcumsumexp has no IR op: an opaque `torch.aten.logcumsumexp.default` node between two engine
    regions."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(6, 6)
        self.head = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.head(torch.relu(self.lin(x)).logcumsumexp(dim=1))


class TinyBert(torch.nn.Module):
    """One transformer block of transformers' BertModel (hidden 32, 2 heads)."""

    def __init__(self):
        super().__init__()
        import transformers

        config = transformers.BertConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=37,
            vocab_size=50,
            max_position_embeddings=16,
        )
        self.bert = transformers.BertModel(config)

    def forward(self, input_ids):
        return self.bert(input_ids=input_ids).last_hidden_state


def _torch_seeds() -> dict[str, tuple]:
    """name -> (model factory, example inputs at batch 2)."""
    return {
        "convnet": (ConvNet, lambda: (torch.randn(2, 3, 8, 8),)),
        "opaque": (OpaqueOpNet, lambda: (torch.randn(2, 6),)),
        "bert": (TinyBert, lambda: (torch.randint(0, 50, (2, 8)),)),
    }


def _write_torch_seed(name: str, factory, make_inputs, directory: Path) -> dict:
    import tensorforge as forge

    torch.manual_seed(0)
    model = factory().eval()
    inputs = make_inputs()
    cache_dir = directory / "cache" / name
    module = forge.compile(model, inputs, cache_dir=str(cache_dir))
    module.save(directory / f"{name}.noplans.tforge")
    module.build_all(inputs[0].shape[0])
    with torch.no_grad():
        out = module(*inputs)
        eager = model(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    torch.testing.assert_close(outs[0], eager if isinstance(eager, torch.Tensor) else eager[0], rtol=1e-4, atol=1e-4)
    module.save(directory / f"{name}.tforge")
    tensors = {f"input_{i}": t.contiguous() for i, t in enumerate(inputs)}
    tensors.update({f"output_{i}": t.contiguous() for i, t in enumerate(outs)})
    save_file(tensors, str(directory / f"{name}.io.safetensors"))
    return {
        "name": name,
        "file": f"{name}.tforge",
        "noplans": f"{name}.noplans.tforge",
        "io": f"{name}.io.safetensors",
        "cache": sorted(p.name for p in cache_dir.glob("*.plan")),
        "cache_dir": f"cache/{name}",
    }


# ---------------------------------------------------------------------------------------------
# ONNX seeds
# ---------------------------------------------------------------------------------------------


def _onnx_seeds() -> dict[str, bytes]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32) * 0.3  # noqa: E731
    seeds = {}

    def model(nodes, inputs, outputs, inits, opset=17):
        graph = helper.make_graph(
            nodes, "seed", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits.items()]
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
        onnx.checker.check_model(m, full_check=True)
        return m.SerializeToString()

    # conv / batch norm / relu / residual add / global pool / gemm
    seeds["onnx_convnet"] = model(
        [
            helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
            helper.make_node("BatchNormalization", ["c1", "g", "beta", "mean", "var"], ["bn"], epsilon=1e-5),
            helper.make_node("Relu", ["bn"], ["r1"]),
            helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
            helper.make_node("Add", ["c2", "r1"], ["res"]),
            helper.make_node("Relu", ["res"], ["r2"]),
            helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
            helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "wf", "bf"], ["y"], transB=1),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])],
        {
            "w1": f32(8, 3, 3, 3),
            "b1": f32(8),
            "g": 1 + f32(8),
            "beta": f32(8),
            "mean": f32(8),
            "var": np.abs(1 + f32(8)).astype(np.float32),
            "w2": f32(8, 8, 3, 3),
            "wf": f32(5, 8),
            "bf": f32(5),
        },
    )

    # attention-like block: matmuls, softmax, layer norm, reshape and transpose
    seeds["onnx_attention"] = model(
        [
            helper.make_node("MatMul", ["x", "wq"], ["q"]),
            helper.make_node("MatMul", ["x", "wk"], ["k"]),
            helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
            helper.make_node("MatMul", ["q", "kt"], ["s"]),
            helper.make_node("Mul", ["s", "scale"], ["ss"]),
            helper.make_node("Softmax", ["ss"], ["p"], axis=-1),
            helper.make_node("MatMul", ["p", "x"], ["a"]),
            helper.make_node("Add", ["a", "x"], ["h"]),
            helper.make_node("LayerNormalization", ["h", "ln_w", "ln_b"], ["n"], axis=-1, epsilon=1e-5),
            helper.make_node("Reshape", ["n", "shape"], ["flat"]),
            helper.make_node("Gemm", ["flat", "wo"], ["y"], transB=1),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        {
            "wq": f32(8, 8),
            "wk": f32(8, 8),
            "scale": np.array(0.35, np.float32),
            "ln_w": 1 + f32(8),
            "ln_b": f32(8),
            "shape": np.array([-1, 32], np.int64),
            "wo": f32(3, 32),
        },
    )

    # an op with no IR mapping (Hardmax runs opaque, through onnxruntime) next to mapped ones
    seeds["onnx_opaque"] = model(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"]),
            helper.make_node("Hardmax", ["m"], ["h"], axis=-1),
            helper.make_node("CumSum", ["m", "axis"], ["c"]),
            helper.make_node("Add", ["h", "c"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 6])],
        {"w": f32(6, 6), "axis": np.array(1, np.int64)},
    )

    # what users bring most: a torch.onnx.export (TorchScript exporter: the dynamo one needs onnxscript)
    import io

    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.onnx.export(
        ConvNet().eval(),
        (torch.randn(2, 3, 8, 8),),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        dynamic_axes={"x": {0: "batch"}},
    )
    seeds["onnx_exported_convnet"] = buffer.getvalue()
    return seeds


# ---------------------------------------------------------------------------------------------
# canaries
# ---------------------------------------------------------------------------------------------


def _write_canaries(root: Path) -> dict:
    """A module and a shared library that each write a file under canary/ when something runs them."""
    lib = root / "canarylib"
    lib.mkdir(parents=True, exist_ok=True)
    canary_dir = root / "canary"
    canary_dir.mkdir(exist_ok=True)
    (lib / f"{CANARY_MODULE}.py").write_text(
        f"import os\nopen(os.path.join({str(canary_dir)!r}, 'module-imported-%d' % os.getpid()), 'w').close()\n"
    )
    shared = None
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc:
        source = lib / "canary.c"
        source.write_text(
            "#include <stdio.h>\n#include <unistd.h>\n"
            "__attribute__((constructor)) static void canary(void) {\n"
            f'  char p[4096]; snprintf(p, sizeof p, "%s/library-loaded-%d", {json.dumps(str(canary_dir))}, '
            "(int)getpid());\n"
            '  FILE *f = fopen(p, "w"); if (f) fclose(f);\n}\n'
        )
        out = lib / "libfuzzcanary.so"
        if subprocess.run([cc, "-shared", "-fPIC", "-o", str(out), str(source)], capture_output=True).returncode == 0:
            shared = str(out)
    return {"dir": str(canary_dir), "pythonpath": str(lib), "module": CANARY_MODULE, "shared_library": shared}


def build_seeds(directory: str | os.PathLike, names: list[str] | None = None) -> dict:
    """Write every seed (or those in `names`) under `directory` and return the manifest."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {"tforge": [], "onnx": [], "canaries": _write_canaries(directory.parent)}
    for name, (factory, make_inputs) in _torch_seeds().items():
        if names is None or name in names:
            manifest["tforge"].append(_write_torch_seed(name, factory, make_inputs, directory))
    for name, data in _onnx_seeds().items():
        if names is None or name in names:
            (directory / f"{name}.onnx").write_bytes(data)
            manifest["onnx"].append({"name": name, "file": f"{name}.onnx"})
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest

"""Build options on the command line: every builder option has a flag, and `--rebuildable` keeps the regions'
weights in the file (by default it holds each weight once, in the plans)."""

from __future__ import annotations

import json

import pytest

import tensorforge as forge
from tensorforge.cli import main

pytest.importorskip("transformers")


def build(capsys, path, *flags) -> dict:
    code = main(
        [
            "build",
            "bert-tiny",
            "--seq-len",
            "8",
            "--batch",
            "2",
            "--device",
            "cpu",
            "--quiet",
            "--json",
            "-o",
            str(path),
            *flags,
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_build_flags_reach_the_saved_module_and_rebuildable_keeps_the_region_weights(capsys, tmp_path):
    timing = tmp_path / "timing.json"
    flags = [
        "--strict-types",
        "--optimization-level",
        "1",
        "--max-streams",
        "1",
        "--timing-cache",
        str(timing),
        "--no-tf32",
    ]
    once = build(capsys, tmp_path / "once.tforge", *flags)
    rebuildable = build(capsys, tmp_path / "rebuildable.tforge", *flags, "--rebuildable")
    assert (once["rebuildable"], rebuildable["rebuildable"]) == (False, True)
    assert 1.8 * once["file_bytes"] < rebuildable["file_bytes"] < 2.1 * once["file_bytes"]
    for name in ("once", "rebuildable"):
        module = forge.load(tmp_path / f"{name}.tforge", device="cpu")
        saved = module.options.saved()
        assert (saved["strict_types"], saved["optimization_level"], saved["max_streams"], saved["tf32"]) == (
            True,
            1,
            1,
            False,
        )
        assert module.builder_config.timing_cache is None, "a file never names the timing cache"
    weights = [
        v.data
        for r in forge.load(tmp_path / "once.tforge", device="cpu").regions.values()
        for v in r.constants.values()
    ]
    assert weights and {t.device.type for t in weights} == {"meta"}


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--optimization-level", "7"], "--optimization-level: must be from 0 to 5"),
        (["--max-streams", "0"], "--max-streams: must be >= 1"),
    ],
)
def test_bad_build_flags_are_usage_errors(capsys, tmp_path, flags, needle):
    with pytest.raises(SystemExit) as exc:
        main(["build", "bert-tiny", "-o", str(tmp_path / "x.tforge"), *flags])
    assert exc.value.code == 2 and needle in capsys.readouterr().err

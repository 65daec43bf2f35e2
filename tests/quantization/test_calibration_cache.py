"""The calibration cache: written after calibrating, reused without data, refused naming what changed, parsed as
data only."""

import pytest
import torch

from quant_models import ResidualCNN, randomized
from tensorforge import frontends, ir
from tensorforge.quantization import CalibrationCacheError, CalibrationDataError, plan_placement, quantize
from tensorforge.quantization.cache import FORMAT, graph_structure_digest, read_cache


def _graph(channels=16):
    torch.manual_seed(3)
    model = randomized(ResidualCNN())
    if channels != 16:
        model.conv2 = torch.nn.Conv2d(16, channels, 3, stride=2, padding=1)
        model.hidden = torch.nn.Linear(channels, 32)
    return frontends.from_torch(model.eval(), (torch.randn(2, 3, 12, 12),))


def _calibration():
    return [torch.randn(4, 3, 12, 12) for _ in range(3)]


def test_cache_is_written_then_reused_without_data(tmp_path):
    g, path = _graph(), tmp_path / "model.calib"
    first = quantize(g, _calibration(), cache=path)
    lines = path.read_text().splitlines()
    assert lines[0].startswith(f"# {FORMAT} precision=int8 method=auto percentile=99.99 graph=")
    header, scales = read_cache(path)
    assert header.graph == graph_structure_digest(g)
    assert list(scales) == plan_placement(g).activation_names
    assert all(line.count(": ") == 1 for line in lines[1:])
    # reused: no calibration data needed, and the graph is the same, constant for constant
    second = quantize(g, None, cache=path)
    x = torch.randn(2, 3, 12, 12)
    assert torch.equal(ir.execute(first, x)[0], ir.execute(second, x)[0])
    # the scales come from the file: an edited scale shows in the graph
    name = next(iter(scales))
    path.write_text(path.read_text().replace(f"{name}: {scales[name]!r}", f"{name}: 0.5"))
    third = quantize(g, None, cache=path)
    assert third.constants[f"{name}_scale"].tensor.item() == 0.5


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(graph=_graph(channels=24)), "the graph changed"),
        (dict(precision="fp8", method="entropy"), "precision int8 (asked: fp8)"),
        (dict(method="minmax"), "method auto (asked: minmax)"),
        (dict(exclude=["add"], include_first_last=True), "no scale for x"),
    ],
    ids=["graph", "precision", "method", "more-sites"],
)
def test_a_cache_that_does_not_fit_is_refused_naming_the_difference(tmp_path, change, message):
    path = tmp_path / "model.calib"
    quantize(_graph(), _calibration(), cache=path)
    graph = change.pop("graph", _graph())
    with pytest.raises(CalibrationCacheError, match="does not fit") as info:
        quantize(graph, _calibration(), cache=path, **change)
    assert message in str(info.value) and "Delete it" in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("relu: 0.1\n", "not a calibration cache"),
        (f"# {FORMAT} precision=int8 method=entropy\n", "lacks graph, percentile"),
        (f"# {FORMAT} precision=int8 method=entropy percentile=99.99 graph=0\nrelu 0.1\n", "line 2"),
        (f"# {FORMAT} precision=int8 method=entropy percentile=99.99 graph=0\nrelu: -1\n", "positive scale"),
        (f"# {FORMAT} precision=int8 method=entropy percentile=99.99 graph=0\nrelu: __import__('os')\n", "line 2"),
        (f"# {FORMAT} precision=int8 method=entropy percentile=99.99 graph=0\nr: 0.1\nr: 0.2\n", "given twice"),
    ],
    ids=["empty", "no-header", "header-fields", "no-colon", "negative", "code", "twice"],
)
def test_a_malformed_cache_is_refused_as_data(tmp_path, text, message):
    path = tmp_path / "bad.calib"
    path.write_text(text)
    with pytest.raises(CalibrationCacheError, match=None) as info:
        read_cache(path)
    assert message in str(info.value)


def test_no_cache_and_no_data_is_an_error(tmp_path):
    with pytest.raises(CalibrationDataError, match="no calibration data"):
        quantize(_graph(), None, cache=tmp_path / "absent.calib")

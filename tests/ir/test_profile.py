"""Profiles: ranges per symbol, TensorRT's per-input spelling, containment, widening, JSON, bounds of expressions."""

import pickle

import pytest

from tensorforge.ir import Profile, ProfileError, Sym, SymExpr

seq, batch = SymExpr.symbol("seq"), SymExpr.symbol("batch")


def test_batch_profile_is_the_legacy_form():
    p = Profile.batch(8)
    assert p.ranges == {"batch": (1, 8, 8)} and p.is_batch_only
    assert p.opt_env == p.max_env == {"batch": 8} and p.min_env == {"batch": 1}
    assert not Profile({"seq": (1, 4, 8)}).is_batch_only
    assert not Profile({"batch": (1, 4, 8)}).is_batch_only  # tuned at 4: not the legacy plan for max_batch 8
    assert not Profile({"batch": (2, 8, 8)}).is_batch_only


@pytest.mark.parametrize(
    "ranges, message",
    [
        ({"seq": (8, 4, 16)}, "min <= opt <= max"),
        ({"seq": (1, 2)}, "(min, opt, max)"),
        ({"seq": (1, 2.5, 4)}, "must be an int"),
        ({"seq": (-1, 2, 4)}, "must lie in"),
        ({"not a name": (1, 2, 4)}, "identifier"),
        ({"seq": (True, 2, 4)}, "must be an int"),
    ],
)
def test_malformed_ranges_are_refused_by_name(ranges, message):
    with pytest.raises(ProfileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Profile(ranges)


def test_from_inputs_reads_symbols_scales_constants_and_expressions():
    inputs = {"ids": [batch, seq], "mask": [batch, seq], "pairs": [Sym("batch", 2), 4], "tail": [seq - 1]}
    spec = {
        "ids": ((1, 8), (4, 128), (8, 512)),
        "mask": ((1, 8), (4, 128), (8, 512)),
        "pairs": ((2, 4), (8, 4), (16, 4)),
        "tail": ((7,), (127,), (511,)),
    }
    p = Profile.from_inputs(inputs, spec)
    assert p.ranges == {"batch": (1, 4, 8), "seq": (8, 128, 512)}


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"ids": ((1, 8), (4, 128), (8, 512)), "mask": ((1, 8), (4, 64), (8, 512))}, "gave it"),
        ({"ids": ((1, 8), (4, 128))}, "min_shape, opt_shape, max_shape"),
        ({"ids": ((1,), (4,), (8,))}, "must have 2 dims"),
        ({"nope": ((1,), (4,), (8,))}, "lacks"),
        ({"pairs": ((3, 4), (8, 4), (16, 4))}, "multiples of 2"),
        ({"pairs": ((2, 4), (8, 5), (16, 4))}, "constant 4"),
        ({"ids": ((1, 8), (4, 128), (8, 512)), "tail": ((7,), (100,), (511,))}, "seq - 1"),
        ({"tail": ((7,), (127,), (511,))}, "no input axis is a bare 'seq'"),
    ],
)
def test_from_inputs_refuses_what_disagrees(spec, message):
    inputs = {"ids": [batch, seq], "mask": [batch, seq], "pairs": [Sym("batch", 2), 4], "tail": [seq - 1]}
    with pytest.raises(ProfileError, match=message):
        Profile.from_inputs(inputs, spec)


def test_contains_violations_covering_and_describe():
    p = Profile({"seq": (16, 128, 512), "batch": (1, 8, 8)})
    assert p.contains({"seq": 16, "batch": 1}) and p.contains({"seq": 512, "batch": 8})
    assert p.violations({"seq": 600, "batch": 1}) == ["seq = 600 is outside 16..512"]
    assert p.violations({"seq": 20}) == ["batch is not bound"]
    wider = p.covering({"seq": 600, "batch": 2})
    assert wider.ranges == {"seq": (16, 128, 600), "batch": (1, 8, 8)}
    assert p.describe() == "batch 1..8 (opt 8), seq 16..512 (opt 128)"
    assert Profile.fixed({"seq": 64}).describe() == "seq = 64"
    assert Profile().describe() == "static"


def test_json_pickle_key_and_hash_round_trip():
    p = Profile({"seq": (16, 128, 512), "batch": (1, 8, 8)})
    assert Profile.from_json(p.to_json()) == p and hash(Profile.from_json(p.to_json())) == hash(p)
    assert pickle.loads(pickle.dumps(p)) == p  # noqa: S301  (our own bytes: the copy/multiprocessing path)
    assert p.key() == '{"batch":[1,8,8],"seq":[16,128,512]}'
    with pytest.raises(ProfileError):
        Profile.from_json([1, 2, 3])
    with pytest.raises(AttributeError):
        p._ranges = ()


def test_bounds_of_expressions_over_a_profile():
    p = Profile({"seq": (16, 128, 512), "batch": (1, 8, 8)})
    assert p.bounds(7) == (7, 7)
    assert p.bounds(batch * seq) == (16, 4096)
    assert p.bounds(seq - 1) == (15, 511)
    assert p.bounds((seq + 1) // 2) == (8, 256)
    assert p.bounds(batch * 12 * seq * seq) == (12 * 256, 8 * 12 * 512 * 512)
    lo, hi = p.bounds(seq - batch)  # not monotone: a sound enclosure of 8..511
    assert lo <= 8 and hi >= 511
    with pytest.raises(ValueError, match="no range for 'h'"):
        p.bounds(SymExpr.symbol("h") + 1)

"""The dynamic-shape options: `profiles` in both spellings (per symbol, TensorRT's per input kept as `InputShapes`
until `resolve_profiles` reads it for a graph), `cuda_graph_cache_size`, `build_on_miss`, `pad_to_multiple` —
each validated with an error that names the problem."""

from __future__ import annotations

import pytest

from tensorforge.ir import Profile, ProfileError, Sym, SymExpr
from tensorforge.runtime import RuntimeOptions
from tensorforge.runtime.options import InputShapes, profile_spec, resolve_profiles

batch, seq = SymExpr.symbol("batch"), SymExpr.symbol("seq")
BERT_INPUTS = {"input_ids": [batch, seq], "attention_mask": [batch, seq], "scale": [4]}


def test_defaults_keep_todays_behaviour():
    options = RuntimeOptions()
    assert (options.profiles, options.cuda_graph_cache_size, options.build_on_miss, options.pad_to_multiple) == (
        None,
        8,
        True,
        None,
    )
    assert resolve_profiles(options, BERT_INPUTS) == []


def test_both_spellings_and_profile_objects_are_accepted():
    options = RuntimeOptions(
        profiles=[
            {"seq": (16, 128, 512), "batch": (1, 8, 8)},
            Profile({"batch": (1, 1, 1), "seq": (1, 16, 16)}),
            {"input_ids": ((1, 8), (8, 128), (32, 512))},
        ]
    )
    symbols, given, per_input = options.profiles
    assert symbols == Profile({"seq": (16, 128, 512), "batch": (1, 8, 8)})
    assert given == Profile({"batch": (1, 1, 1), "seq": (1, 16, 16)})
    assert per_input == InputShapes((("input_ids", ((1, 8), (8, 128), (32, 512))),))
    assert per_input.describe() == "input_ids 1x8..32x512 (opt 8x128)"
    assert options.replace(multi_engine=1).profiles == options.profiles, "normalising twice changes nothing"
    hash(options)


def test_resolve_reads_the_per_input_spelling_through_the_graphs_dims():
    options = RuntimeOptions(
        profiles=[
            {"input_ids": ((1, 8), (8, 128), (32, 512))},
            {"batch": (1, 4, 4), "seq": (8, 8, 8)},
            {"input_ids": ((2, 16), (2, 16), (2, 16)), "attention_mask": ((2, 16), (2, 16), (2, 16))},
        ]
    )
    assert resolve_profiles(options, BERT_INPUTS) == [
        Profile({"batch": (1, 8, 32), "seq": (8, 128, 512)}),
        Profile({"batch": (1, 4, 4), "seq": (8, 8, 8)}),
        Profile.fixed({"batch": 2, "seq": 16}),
    ]
    scaled = RuntimeOptions(profiles=[{"pairs": ((2, 4), (8, 4), (16, 4))}])
    assert resolve_profiles(scaled, {"pairs": [Sym("batch", 2), 4]}) == [Profile({"batch": (1, 4, 8)})]


@pytest.mark.parametrize(
    "profiles, message",
    [
        ([{"sequence": (1, 2, 3), "batch": (1, 1, 1)}], "gives a range to 'sequence', which no input of the graph has"),
        ([{"seq": (1, 2, 3)}], r"profiles\[0\] \(seq 1..3 \(opt 2\)\) gives no range to 'batch'; add \{'batch'"),
        ([{"batch": (1, 1, 1), "seq": (1, 1, 1)}, {"seq": (1, 2, 3)}], r"profiles\[1\]"),
        ([{"input_ids": ((1, 8), (8, 128), (32, 512)), "attention_mask": ((1, 8), (8, 64), (32, 512))}], "gave it"),
        ([{"input_ids": ((1,), (8,), (32,))}], r"profiles\[0\]: input 'input_ids': the min shape .* must have 2 dims"),
        ([{"ids": ((1, 8), (8, 128), (32, 512))}], r"input\(s\) \['ids'\] the graph lacks"),
        ([{"scale": ((4,), (5,), (6,))}], "is the constant 4"),
    ],
)
def test_resolve_refuses_profiles_that_do_not_fit_the_graph(profiles, message):
    with pytest.raises(ProfileError, match=message):
        resolve_profiles(RuntimeOptions(profiles=profiles), BERT_INPUTS)


def test_a_static_graph_refuses_any_profile_naming_its_lack_of_symbols():
    with pytest.raises(ProfileError, match=r"which no input of the graph has; its symbols: none \(all shapes static\)"):
        resolve_profiles(RuntimeOptions(profiles=[{"batch": (1, 2, 4)}]), {"x": [2, 3]})


@pytest.mark.parametrize(
    "profiles, message",
    [
        ({"seq": (1, 2, 3)}, r"profiles must be a list of profiles .*profiles=\[...\] even for one; got dict"),
        (Profile({"seq": (1, 2, 3)}), "profiles must be a list of profiles"),
        ([], "profiles is empty: give at least one profile, or None"),
        ([{}], r"profiles\[0\]: a profile is an ir.Profile or a non-empty dict"),
        (["seq"], r"profiles\[0\]: a profile is an ir.Profile or a non-empty dict"),
        ([{"seq": (8, 4, 16)}], r"profiles\[0\]: the range of 'seq' must satisfy min <= opt <= max"),
        ([{"seq": (1, 2)}], r"profile entry 'seq': give \(min, opt, max\) for a symbol"),
        ([{"x": ((1, 2), 3, (4, 5))}], r"profile entry 'x': give \(min, opt, max\) for a symbol, .* or \(min_shape"),
        ([{"seq": (1, 2, 3), "x": ((1,), (2,), (3,))}], r"mixes the two spellings: \['seq'\] look like symbols"),
        ([{"x": ((1, 8), (8, 128), (32, 64))}], r"input 'x' axis 1: the sizes must satisfy min <= opt <= max"),
        ([{"x": ((1, 8), (8,), (32, 512))}], "its min, opt and max shapes must have one rank, got 1x8, 8, 32x512"),
        ([{"x": ((1, 8.0), (8, 8), (32, 8))}], "input 'x' min shape: sizes must be ints"),
        ([{"x": ((1, True), (8, 8), (32, 8))}], "input 'x' min shape: sizes must be ints"),
        ([{"x": ((1, -1), (8, 8), (32, 8))}], "sizes must be ints from 0"),
        ([{3: ((1,), (2,), (3,))}], "input name must be a non-empty string"),
    ],
)
def test_malformed_profiles_are_refused_by_name(profiles, message):
    with pytest.raises(ValueError, match=message):
        RuntimeOptions(profiles=profiles)


def test_profile_spec_reads_one_profile():
    assert profile_spec({"seq": [1, 2, 3]}) == Profile({"seq": (1, 2, 3)})
    assert profile_spec({"x": [[1], [2], [3]]}).to_json() == {"x": [[1], [2], [3]]}


@pytest.mark.parametrize("size, ok", [(1, True), (64, True), (0, False), (-2, False), (True, False), (2.0, False)])
def test_cuda_graph_cache_size_is_a_positive_int(size, ok):
    if ok:
        assert RuntimeOptions(cuda_graph_cache_size=size).cuda_graph_cache_size == size
    else:
        with pytest.raises(ValueError, match="cuda_graph_cache_size must be a positive int"):
            RuntimeOptions(cuda_graph_cache_size=size)


def test_build_on_miss_is_a_bool():
    assert RuntimeOptions(build_on_miss=False).build_on_miss is False
    with pytest.raises(ValueError, match="build_on_miss must be a bool, got 0"):
        RuntimeOptions(build_on_miss=0)


def test_pad_to_multiple_is_read_only_and_compared_by_value():
    given = {"seq": 32, "height": 8}
    options = RuntimeOptions(pad_to_multiple=given)
    given["seq"] = 1  # the options keep their own copy
    assert options.pad_to_multiple == {"height": 8, "seq": 32}
    assert list(options.pad_to_multiple) == ["height", "seq"]
    with pytest.raises(TypeError):
        options.pad_to_multiple["seq"] = 64  # type: ignore[index]
    assert options == RuntimeOptions(pad_to_multiple={"seq": 32, "height": 8})
    assert hash(options) == hash(RuntimeOptions(pad_to_multiple={"seq": 16}))  # the mapping is not hashed
    assert options.replace(fp16=True).pad_to_multiple == {"height": 8, "seq": 32}


@pytest.mark.parametrize(
    "value, message",
    [
        ({"seq": 0}, r"pad_to_multiple\['seq'\] must be a positive int, got 0"),
        ({"seq": True}, r"pad_to_multiple\['seq'\] must be a positive int, got True"),
        ({"seq": 16.0}, r"pad_to_multiple\['seq'\] must be a positive int"),
        ({"not a name": 16}, "'not a name' is not a symbol name"),
        (32, r"pad_to_multiple must be a dict of symbol -> multiple, e.g. \{'seq': 32\}"),
    ],
)
def test_malformed_pad_to_multiple_is_refused(value, message):
    with pytest.raises(ValueError, match=message):
        RuntimeOptions(pad_to_multiple=value)


def test_saved_form_is_json_and_reads_back():
    import json

    options = RuntimeOptions(
        profiles=[{"seq": (16, 128, 512), "batch": (1, 1, 1)}, {"ids": ((1, 8), (2, 16), (4, 32))}],
        pad_to_multiple={"seq": 32},
        cuda_graph_cache_size=2,
        build_on_miss=False,
    )
    saved = json.loads(json.dumps(options.saved()))
    assert saved["profiles"] == [{"batch": [1, 1, 1], "seq": [16, 128, 512]}, {"ids": [[1, 8], [2, 16], [4, 32]]}]
    assert RuntimeOptions.from_saved(saved) == options

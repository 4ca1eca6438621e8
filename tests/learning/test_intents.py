"""The ``intents`` task: labelled examples from the vault's ``intents`` collection, a linear head
on their embeddings. Fast tests use the test kit's bag-of-words embedder; one uses the packaged
MiniLM (``embed``), which needs no download."""

from __future__ import annotations

import json

import numpy as np
import pytest

from homeswarm.errors import InvalidArgument
from homeswarm.learning import Intents, TorchTrainer, get_task, parse_example, predictor
from homeswarm.learning.testing import EXAMPLES, bag_of_words


def entries(rows, scope="personal"):
    table = [(key, json.dumps(f"{label}\t{text}"), scope) for key, label, text in rows]

    def read(prefix):
        return [row for row in table if row[0].startswith(prefix)]

    return read


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("lights_on\tturn on the lights", ("lights_on", "turn on the lights")),
        (" music \t play jazz ", ("music", "play jazz")),
        ("no tab here", None),
        ("\tno label", None),
        ("label\t", None),
        ("x" * 65 + "\ttoo long a label", None),
    ],
)
def test_an_example_is_a_label_a_tab_and_the_text(value, parsed):
    assert parse_example(json.dumps(value)) == parsed


def test_values_that_are_not_examples_are_skipped_and_counted():
    assert parse_example(json.dumps({"label": "x", "text": "y"})) is None
    assert parse_example("not json") is None
    task = Intents(embedder=bag_of_words)
    rows = entries(EXAMPLES[:5])

    def read(prefix):
        return [*rows(prefix), ("intents/odd", json.dumps(3), "personal")]

    task.bind(read)
    assert len(task.examples()) == 5
    assert task.skipped == 1


def test_the_job_fixes_the_labels_and_private_examples_never_train():
    task = get_task("intents")
    assert task.name == "intents"
    assert task.scope == "personal"  # type: ignore[attr-defined]
    private = entries([("intents/secret", "diary", "my private words")], scope="private")
    public = entries(EXAMPLES)
    task.bind(lambda p: [*public(p), *private(p)])  # type: ignore[attr-defined]
    spec = task.spec()  # type: ignore[attr-defined]
    assert spec == {"labels": ["lights_on", "music", "timer", "weather"]}
    assert all(rid != "intents/secret" for rid, _, _ in task.examples())  # type: ignore[attr-defined]
    lonely = Intents(embedder=bag_of_words)
    lonely.bind(entries(EXAMPLES[:3]))  # one label only
    with pytest.raises(InvalidArgument, match="fewer than 2 labels"):
        lonely.spec()
    with pytest.raises(InvalidArgument, match="labels"):
        lonely.with_spec({"labels": "not a list"})


def test_every_device_holds_the_replicated_examples_and_a_seeded_fifth_is_held_out():
    task = Intents(embedder=bag_of_words)
    task.bind(entries(EXAMPLES))
    task = task.with_spec(task.spec())
    split = task.split(["a", "b", "c"], alpha=0.5, seed=11)
    assert split.devices["a"].ids == split.devices["b"].ids == split.devices["c"].ids
    train, test = set(split.devices["a"].ids), set(split.test.ids)
    assert not train & test
    assert len(train) + len(test) == len(EXAMPLES)
    assert 0.1 < len(test) / len(EXAMPLES) < 0.3
    assert split.test.ids == task.split(["z"], alpha=0.5, seed=11).test.ids  # same seed, same
    assert split.test.ids != task.split(["z"], alpha=0.5, seed=12).test.ids
    assert split.devices["a"].x.shape == (len(train), 384)
    # a label the job does not know is left out
    fewer = task.with_spec({"labels": ["music", "timer"]})
    labels = set(fewer.split(["a"], alpha=0.5, seed=11).devices["a"].y.tolist())
    assert labels == {0, 1}


def _train(task: Intents, seed: int = 3) -> tuple[float, np.ndarray]:
    import torch

    split = task.split(["a"], alpha=0.5, seed=seed)
    torch.manual_seed(0)
    trainer = TorchTrainer(task.model(), split.devices["a"])
    params = trainer.sgd(
        trainer.initial(), epochs=10, batch=16, lr=1.0, rng=np.random.default_rng(0)
    )
    return task.evaluate(predictor(task.model(), params), split.test), params


def test_a_head_on_the_embeddings_learns_the_intents():
    task = Intents(embedder=bag_of_words)
    task.bind(entries(EXAMPLES))
    task = task.with_spec(task.spec())
    accuracy, params = _train(task)
    assert accuracy > 0.9
    head = task.head(params)
    assert head["labels"] == ["lights_on", "music", "timer", "weather"]
    assert np.array(head["weights"]).shape == (4, 384)
    with pytest.raises(InvalidArgument, match="shape"):
        task.head(params[:-1])


def test_the_real_embedding_model_gives_a_head_that_learns():
    """The packaged all-MiniLM-L6-v2 through the ``embed`` kernel (no download)."""
    from homeswarm.kernels import embed

    if not embed.is_available():
        pytest.skip("the embedding model is not installed")
    rows = [row for row in EXAMPLES if int(row[0][-3:]) < 10]  # 10 per label: 40 texts
    task = Intents()
    task.bind(entries(rows))
    task = task.with_spec(task.spec())
    accuracy, params = _train(task)
    assert accuracy > 0.7  # four labels: a quarter is chance
    # the classify kernel answers from the trained head as the head itself does
    from homeswarm.kernels import classify

    split = task.split(["a"], alpha=0.5, seed=3)
    by_key = {key: text for key, _, text in rows}
    texts = [by_key[key] for key in split.test.ids]
    answers = classify.run({"head": task.head(params), "query": texts})
    predicted = [task.labels.index(a["label"]) for a in answers]
    assert predicted == predictor(task.model(), params)(split.test.x).tolist()
    assert all(0 < a["score"] <= 1 for a in answers)
    assert sum(answers[0]["scores"].values()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    ("head", "needle"),
    [
        ("nope", "head must be"),
        ({"labels": ["a"], "weights": [[0.0] * 384], "bias": [0.0]}, "2-64 labels"),
        ({"labels": ["a", "b"], "weights": [[0.0] * 384], "bias": [0.0, 0.0]}, "one row"),
        ({"labels": ["a", "b"], "weights": [[0.0] * 3] * 2, "bias": [0.0, 0.0]}, "one row"),
        (
            {"labels": ["a", "b"], "weights": [[float("nan")] * 384] * 2, "bias": [0.0, 0.0]},
            "finite",
        ),
    ],
)
def test_classify_refuses_a_malformed_head_in_one_line(head, needle):
    from homeswarm.kernels import InvalidInput, classify

    with pytest.raises(InvalidInput, match=needle) as info:
        classify.validate({"head": head, "query": "turn on the lights"})
    assert str(info.value).startswith("classify: ")
    good = {"labels": ["a", "b"], "weights": [[0.0] * 384] * 2, "bias": [0.0, 1.0]}
    assert classify.validate({"head": good, "query": "x"})["head"]["labels"] == ["a", "b"]

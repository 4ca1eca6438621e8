"""Recall: the index against exact search, the service kept current by the vault (local writes
and sync), what a device may not read never answered, and ``swarm recall`` on the command line.

Fast tests use the feature-hashing embedder (real, deterministic, instant); exactly one slow test
uses the real model end to end.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
import pytest
import trio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from test_vault_service import SPECS, Device, make_homes, memory_swarm, until

from homeswarm.cli import main
from homeswarm.swarm import Daemon, HashEmbedder, RecallIndex, RecallService, init_home
from homeswarm.swarm import _recall_service as recall_service
from homeswarm.swarm._recall import Doc, document_text, exact_search, normalise
from homeswarm.vault import SCOPES, VaultError

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]

# --- the embedder ------------------------------------------------------------------------------


def test_the_hash_embedder_is_deterministic_unit_length_and_shares_words():
    e = HashEmbedder(128)
    a, b, c = e.embed(["The capital of Portugal", "Portugal capital city", "a red bicycle"])
    assert np.allclose(np.linalg.norm([a, b, c], axis=1), 1.0)
    assert np.array_equal(e.embed(["The capital of Portugal"])[0], a)
    assert float(a @ b) > float(a @ c)
    assert not np.any(e.embed([""]))  # nothing to say: the zero vector, not NaN


def test_document_text_reads_the_name_and_the_value():
    assert document_text("facts/home_city", '"Lisbon"') == "home city: Lisbon"
    assert document_text("memories/x", '{"a": 1}') == 'x: {"a": 1}'


# --- the index against exact search, under random puts, overwrites and deletes ---------------

DIMS = 8
KEYS = [f"{c}/{n}" for c in ("facts", "memories") for n in "abcdefghij"]
SCOPE_NAMES = ("public", "personal", "private")
unit = st.lists(st.floats(-1, 1, allow_nan=False, width=32), min_size=DIMS, max_size=DIMS).filter(
    lambda v: sum(x * x for x in v) > 0.01
)


class IndexMatchesExactSearch(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.index = RecallIndex(DIMS)
        self.model: dict[str, tuple[Doc, np.ndarray]] = {}
        self.writes = 0

    @rule(key=st.sampled_from(KEYS), scope=st.sampled_from(SCOPE_NAMES), v=unit)
    def put(self, key, scope, v):  # a new entry, or an overwrite (maybe into another scope)
        self.writes += 1
        doc = Doc(key, scope, json.dumps(f"value {self.writes}"))
        vector = normalise(np.array([v], dtype=np.float32))
        self.index.put([doc], vector)
        self.model[key] = (doc, vector[0])

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key):
        assert self.index.remove([key]) == (1 if key in self.model else 0)
        self.model.pop(key, None)

    @rule(data=st.data())
    def sync_to(self, data):  # what arrives by sync: the diff to a new vault state
        keys = data.draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=6))
        current = {k: d for k, (d, _) in self.model.items() if k not in keys}
        fresh, gone = self.index.diff(current.values())
        assert fresh == []
        assert sorted(gone) == sorted(keys & self.model.keys())
        self.index.remove(gone)
        for key in gone:
            del self.model[key]

    @invariant()
    def holds_exactly_the_model(self):
        assert len(self.index) == len(self.model)
        assert sorted(d.key for d in self.index.docs()) == sorted(self.model)

    @rule(
        q=unit,
        k=st.integers(1, 8),
        scopes=st.none() | st.sets(st.sampled_from(SCOPE_NAMES), min_size=1),
        collections=st.none() | st.sets(st.sampled_from(("facts", "memories")), min_size=1),
    )
    def search_equals_exact(self, q, k, scopes, collections):
        query = normalise(np.array([q], dtype=np.float32))[0]
        hits = self.index.search(query, k, scopes=scopes, collections=collections)
        eligible = [
            (d, v)
            for d, v in self.model.values()
            if (scopes is None or d.scope in scopes)
            and (collections is None or d.collection in collections)
        ]
        exact = (
            exact_search([d for d, _ in eligible], np.array([v for _, v in eligible]), query, k)
            if eligible
            else []
        )
        # the same scores in the same order (keys may swap only between equal scores)
        assert len(hits) == len(exact)
        assert [h.score for h in hits] == pytest.approx([s for _, s in exact], abs=1e-3)
        for hit in hits:  # every answer is the entry as it is now: nothing deleted, nothing stale
            doc, vector = self.model[hit.key]
            assert (hit.scope, hit.text) == (doc.scope, doc.text)
            assert hit.score == pytest.approx(float(vector @ query), abs=1e-4)


IndexMatchesExactSearch.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_the_index_matches_exact_search = IndexMatchesExactSearch.TestCase


def test_an_overwritten_entry_answers_with_its_new_value_only():
    e = HashEmbedder(64)
    index = RecallIndex(64)
    old = Doc("facts/car", "personal", '"a red bicycle"')
    index.put([old], e.embed(["a red bicycle"]))
    new = Doc("facts/car", "private", '"a blue boat"')
    index.put([new], e.embed(["a blue boat"]))
    hits = index.search(e.embed(["a red bicycle"])[0], 10)
    assert [(h.key, h.scope, h.text) for h in hits] == [("facts/car", "private", '"a blue boat"')]
    assert index.search(e.embed(["boat"])[0], 10, scopes=["personal"]) == []


def test_an_index_comes_back_from_its_export_exactly_and_refuses_what_is_not_one():
    e = HashEmbedder(64)
    index = RecallIndex(64)
    docs = [
        Doc(f"{'facts' if i % 2 else 'memories'}/n{i}", SCOPES[i % 3], json.dumps(f"note {i}"))
        for i in range(300)
    ]
    index.put(docs, e.embed([d.text for d in docs]))
    index.remove(["facts/n1", "memories/n2"])
    data = index.export(e.name)
    again = RecallIndex.restore(data, e.name, 64)
    assert sorted(again.docs(), key=str) == sorted(index.docs(), key=str)
    for q in ("note 7", "note 150", "note 299"):
        vector = e.embed([q])[0]
        assert again.search(vector, 10) == index.search(vector, 10)
        assert again.search(vector, 5, scopes=["private"]) == index.search(
            vector, 5, scopes=["private"]
        )
    again.put([Doc("facts/new", "public", '"new"')], e.embed(["new"]))  # it goes on as before
    assert len(again) == len(index) + 1
    with pytest.raises(ValueError, match="made by"):
        RecallIndex.restore(data, "all-MiniLM-L6-v2", 64)
    for bad in (b"", b"junk", data[: len(data) // 2], data[:60] + bytes(40) + data[100:]):
        with pytest.raises(ValueError, match=r"recall cache|graph|entr") as caught:
            RecallIndex.restore(bad, e.name, 64)
        assert "\n" not in str(caught.value)


# --- the service inside real peers (memory network, virtual time) ----------------------------


class RecallDevice(Device):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.recall = RecallService(self.vault, HashEmbedder())
        self.peer.services["recall"] = self.recall

    def indexed(self) -> set[str]:
        return set() if self.recall.index is None else {d.key for d in self.recall.index.docs()}


@pytest.fixture
def recall_devices(monkeypatch):
    import test_vault_service

    monkeypatch.setattr(test_vault_service, "Device", RecallDevice)


async def ask(device: RecallDevice, query: str, **args) -> dict:
    return await device.recall.control("query", {"query": query, **args})


async def test_entries_written_on_one_device_are_recalled_on_another(
    tmp_path, autojump_clock, recall_devices
):
    idents = make_homes(tmp_path, SPECS)  # server, laptop, phone (public, personal), relay
    async with memory_swarm(idents) as (_network, devices):
        server, laptop, phone, relay = devices
        assert (await ask(phone, "anything"))["results"] == []  # the phone starts its index
        await laptop.put("facts/capital", "Lisbon is the capital of Portugal")
        await laptop.put("facts/pin", "the bank card pin is 4321", "private")
        await laptop.put("memories/trip", "a trip to Porto by train", "public")
        await laptop.put("context/chat", "capital letters in the chat")  # not long-term
        # by sync alone (the background refresh, no query): within seconds
        await until(
            lambda: phone.indexed() == {"facts/capital", "memories/trip"},
            within=5.0,
            what="the phone's index to follow sync",
        )
        answer = await ask(phone, "what is the capital of Portugal", k=5)
        assert answer["device"] == phone.ident.device_id
        assert answer["executor"] == "inline"
        assert answer["embedder"] == "hash-256"
        keys = [r["key"] for r in answer["results"]]
        assert keys[0] == "facts/capital"
        assert "facts/pin" not in keys
        assert "context/chat" not in keys
        assert answer["results"][0]["scope"] == "personal"
        assert json.loads(answer["results"][0]["value"]) == "Lisbon is the capital of Portugal"
        scores = [r["score"] for r in answer["results"]]
        assert scores == sorted(scores, reverse=True)
        # the private fact is found where it may be read, and asked for where it may not: refused
        on_server = await ask(server, "bank card pin", k=1, scope="private")
        assert [r["key"] for r in on_server["results"]] == ["facts/pin"]
        with pytest.raises(VaultError, match="may not read private"):
            await ask(phone, "bank card pin", scope="private")
        with pytest.raises(VaultError, match="may read no vault entries"):
            await ask(relay, "anything")
        # filters
        only = await ask(server, "capital Porto train", collection="memories")
        assert [r["key"] for r in only["results"]] == ["memories/trip"]
        public = await ask(phone, "capital Portugal", scope="public")
        assert {r["key"] for r in public["results"]} == {"memories/trip"}
        # an overwrite and a delete elsewhere: never answered again once synced
        await laptop.put("facts/capital", "Madrid is the capital of Spain")
        await laptop.vault.control("rm", {"key": "memories/trip"})
        await until(
            lambda: (
                phone.get("facts/capital") == "Madrid is the capital of Spain"
                and phone.get("memories/trip") is None
            ),
            within=5.0,
            what="the overwrite and the delete on the phone",
        )
        after = await ask(phone, "a trip to Porto by train, capital of Portugal", k=10)
        assert [json.loads(r["value"]) for r in after["results"]] == [
            "Madrid is the capital of Spain"
        ]
        await until(lambda: phone.indexed() == {"facts/capital"}, within=3.0, what="index follows")


async def test_a_phone_asks_the_server_and_hears_only_what_it_may_read(
    tmp_path, autojump_clock, recall_devices
):
    idents = make_homes(tmp_path, SPECS)  # server, laptop, phone (public, personal), relay
    async with memory_swarm(idents) as (_network, devices):
        server, _laptop, phone, relay = devices
        await server.put("facts/pin", "the bank card pin is 4321", "private")
        await server.put("facts/bank", "the bank is open until five", "personal")
        await server.put("facts/card", "a birthday card for the bank manager", "public")
        answer = await ask(phone, "bank card pin", on="server")
        assert answer["device"] == server.ident.device_id
        assert {r["key"] for r in answer["results"]} == {"facts/bank", "facts/card"}
        assert phone.recall.index is None  # the server searched; the phone built nothing
        with pytest.raises(VaultError, match="may not read private"):
            await ask(phone, "bank card pin", on="server", scope="private")
        with pytest.raises(VaultError, match="may read no vault entries"):
            await ask(relay, "bank card pin", on=server.ident.device_id)
        on_laptop = await ask(server, "bank card pin", on="laptop", k=1)  # the laptop reads all
        assert [r["key"] for r in on_laptop["results"]] == ["facts/pin"]
        mine = await ask(server, "bank", on="server", k=3)  # naming itself: answered here
        assert mine["device"] == server.ident.device_id
        with pytest.raises(ValueError, match="no device 'toaster'"):
            await ask(phone, "bank", on="toaster")


async def test_a_write_is_recalled_by_the_next_query_on_the_same_device(
    tmp_path, autojump_clock, recall_devices, monkeypatch
):
    monkeypatch.setattr(recall_service, "BATCH", 8)  # several embedding batches
    idents = make_homes(tmp_path, SPECS[:1])
    async with memory_swarm(idents) as (_network, (server,)):
        async with trio.open_nursery() as nursery:  # one group commit
            for i in range(60):
                nursery.start_soon(server.put, f"memories/m{i}", f"note {i} about topic{i % 7}")
        first = await ask(server, "note 23 about topic2", k=3)
        assert first["results"][0]["key"] == "memories/m23"
        assert first["indexed"] == 60
        assert first["pending"] == 0
        await server.put("facts/new", "a zebra crossing near the school")
        answer = await ask(server, "zebra crossing", k=1)  # no wait: read your writes
        assert [r["key"] for r in answer["results"]] == ["facts/new"]
        status = await server.recall.control("status", {})
        assert status["indexed"] == 61
        assert status["rebuild_s"] is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"query": ""}, "non-empty string"),
        ({"query": 3}, "non-empty string"),
        ({"query": "x", "k": 0}, "1 to 100"),
        ({"query": "x", "k": True}, "1 to 100"),
        ({"query": "x", "scope": "secret"}, "scope is one of"),
        ({"query": "x", "collection": "context"}, "collection is one of"),
    ],
)
async def test_bad_queries_are_one_clear_error(tmp_path, args, message):
    ident = init_home(tmp_path / "h", name="h", role="laptop")
    from homeswarm.swarm import VaultService

    service = RecallService(VaultService(ident), HashEmbedder())
    with pytest.raises(ValueError, match=message):
        await service.control("query", args)


# --- swarm recall on the command line, through a running peer ---------------------------------


def _cli(capsys, home: str, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--home", home])
    out, err = capsys.readouterr()
    return code, out, err


def exercise_recall_cli(capsys, home: str) -> None:
    for key, value, scope in (
        ("facts/capital", "Lisbon is the capital of Portugal", "personal"),
        ("memories/walk", "a long walk by the river", "private"),
        ("facts/bike", "my bicycle is red", "public"),
    ):
        assert _cli(capsys, home, "vault", "put", key, value, "--scope", scope)[0] == 0
    code, out, _ = _cli(capsys, home, "recall", "capital of Portugal", "--json")
    assert code == 0
    reply = json.loads(out)
    assert set(reply) >= {"results", "device", "executor"}
    assert reply["results"][0] == {
        "key": "facts/capital",
        "scope": "personal",
        "score": reply["results"][0]["score"],
        "value": "Lisbon is the capital of Portugal",
    }
    code, out, _ = _cli(capsys, home, "recall", "walk river", "--k", "1")
    assert code == 0
    lines = out.splitlines()
    assert "memories/walk" in lines[1]
    assert "private" in lines[1]
    assert "a long walk" in lines[1]
    assert "embedded and searched on" in lines[0]
    code, out, _ = _cli(capsys, home, "recall", "bicycle", "--collection", "memories", "--json")
    assert [r["key"] for r in json.loads(out)["results"]] == ["memories/walk"]
    with pytest.raises(SystemExit) as exit_:
        main(["recall", "x", "--k", "0", "--home", home])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert len(err.strip().splitlines()) == 1
    assert "--k" in err


@asynccontextmanager
async def serving(daemon: Daemon, embedder: HashEmbedder) -> AsyncIterator[RecallService]:
    """``swarm up`` in this trio run, its recall service on ``embedder`` (set before its first
    look at the vault), until the block ends."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            assert daemon.peer is not None
            recall = daemon.peer.services["recall"]
            assert isinstance(recall, RecallService)
            recall.embedder = embedder
            yield recall
            nursery.cancel_scope.cancel()


async def test_swarm_recall_through_a_running_peer(tmp_path, capsys):
    ident = init_home(
        tmp_path / "up", name="up", role="laptop", network={"listen": LOOPBACK, "mdns": False}
    )
    daemon = Daemon(ident, listen=LOOPBACK, mdns=False)
    async with serving(daemon, HashEmbedder()):
        await trio.to_thread.run_sync(exercise_recall_cli, capsys, str(ident.home))
    # the index outlives the peer only encrypted: no embedding (nor text) of an entry is in any
    # file of the home in the clear
    cache = ident.home / "recall.age"
    assert cache.stat().st_mode & 0o777 == 0o600
    text = document_text("facts/capital", json.dumps("Lisbon is the capital of Portugal"))
    vector = HashEmbedder().embed([text])[0]
    first = int(np.flatnonzero(vector)[0])
    window = vector[first : first + 16].tobytes()  # starts with a non-zero number
    for path in ident.home.rglob("*"):
        if path.is_file():
            assert window not in path.read_bytes(), path
            assert b"capital of Portugal" not in path.read_bytes(), path
    # the next start takes the index from the cache and embeds nothing again
    embedded: list[str] = []
    counting = HashEmbedder()
    plain = counting.embed
    counting.embed = lambda texts: embedded.extend(texts) or plain(texts)  # type: ignore[method-assign]
    async with serving(daemon, counting) as recall:
        code, out, _ = await trio.to_thread.run_sync(
            _cli, capsys, str(ident.home), "recall", "capital of Portugal", "--json"
        )
        assert code == 0
        assert json.loads(out)["results"][0]["key"] == "facts/capital"
        assert recall.restored == len(recall.index) > 0
        assert embedded == ["capital of Portugal"]  # the query alone
    # a cache that is not one (or made by another embedder) is ignored and the index rebuilt
    cache.write_bytes(b"junk")
    other = RecallService(recall.vault, HashEmbedder(32))
    other._peer = daemon.peer
    assert other._restore() is None


def test_swarm_recall_without_a_running_peer_says_so(tmp_path, capsys):
    init_home(tmp_path / "h", name="h", role="laptop")
    code, out, err = _cli(capsys, str(tmp_path / "h"), "recall", "anything")
    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "swarm up" in err


def test_help_of_swarm_recall(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["recall", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--k", "--scope", "--collection", "--on", "--json", "--home"):
        assert option in out


# --- the real model, end to end (one slow test) ---------------------------------------------


@pytest.mark.slow
async def test_a_fact_about_lisbon_is_found_by_portuguese_capital(tmp_path, capsys):
    ident = init_home(
        tmp_path / "up", name="up", role="laptop", network={"listen": LOOPBACK, "mdns": False}
    )
    daemon = Daemon(ident, listen=LOOPBACK, mdns=False)

    def exercise() -> None:
        home = str(ident.home)
        for key, value in (
            ("facts/city", "Lisbon is a city on the Tagus with yellow trams"),
            ("facts/dog", "Our dog is called Biscuit and likes the beach"),
            ("memories/dentist", "The dentist appointment is on Tuesday at nine"),
            ("facts/wifi", "The guest network is named Orchard"),
        ):
            assert _cli(capsys, home, "vault", "put", key, value)[0] == 0
        code, out, _ = _cli(capsys, home, "recall", "Portuguese capital", "--json", "--k", "2")
        assert code == 0
        reply = json.loads(out)
        assert reply["results"][0]["key"] == "facts/city"
        assert reply["results"][0]["score"] > reply["results"][1]["score"]

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            await trio.to_thread.run_sync(exercise)
            assert daemon.peer is not None
            assert daemon.peer.services["recall"].embedder.name == "all-MiniLM-L6-v2"
            nursery.cancel_scope.cancel()

"""The stream service: stateful anomaly instances that live where the mesh puts them and survive
their device.

A device's hosted telemetry series (``[anomaly] hosted``, ``cpu`` by default) are not scored by a
model of its own: each is a stream (``kernels.StreamProducer`` here, on the measured device) into
one ``anomaly`` instance (``kernels.StreamInstance``) that a ``placement.Mesh`` of this service
places with the kernel's needs (personal scope, stateful, small) on the view of the placement
service: on this device or on another, never on a light member, never where the scope may not
go. Both ends are this module, the producer's and the host's:

- every ``CHECK_S`` the producer keeps its mesh (``keep_mesh``: a home declared dead or gone
  has its instances re-placed at once, a home that may no longer run them, say gone light or
  below its battery floor, hands them over) and talks to each instance's home: ``streams.open``
  (the host restores the instance from the latest checkpoint in ITS OWN vault replica, or makes
  a new model, and says the last event it holds), then ``resume`` and ``streams.feed`` with
  the events after that (at most ``FEED_MAX`` a request); a home that is not ``alive`` in the
  producer's view is not asked (a suspect one keeps its instance until declared dead);
- the host applies each event exactly once (``StreamInstance``), and at most every
  ``[anomaly] checkpoint_s`` seconds of its instance's life writes a checkpoint into its vault
  before it answers: the checkpoint in ``scope`` (``personal``), age-encrypted to the scope's
  epoch key and replicated like any entry, under ``state/anomaly/PRODUCER/SERIES/HOST`` (a
  manifest: the last event, the parts, their sha256) and ``.../HOST/I`` (base64 parts of
  ``PART_CHARS``: a vault value is at most 32 KB). Only then does its answer acknowledge the
  events the checkpoint covers, which the producer forgets; the answer carries the scores. The
  manifest also keeps the scores the producer has not confirmed having (each feed says the last
  it holds): if the host dies between storing and answering, whoever restores the checkpoint
  answers the replay of those events with them;
- a move: the new home restores the newest checkpoint its replica holds (of any host; the state
  after event N is the same wherever it was computed). If that is older than what the producer
  had acknowledged (its replica has not caught up), it says ``behind`` and syncs, and the
  producer asks again; then the producer replays every event after it. A planned move
  (``streams.close``) has the old home checkpoint and let go first;
- any failed request (the home died, restarted, refused a stale epoch or a gap) makes the
  producer open again, which is the same path: nothing is lost (the producer keeps every event
  no stored checkpoint covers) and nothing is counted twice (an instance ignores an event it
  holds; a replay from a checkpoint recomputes the same scores from the same state).

The scores go to the watch service (``WatchService.judge``) once per event, so an anomaly of a
hosted series shows in ``swarm status`` as any other. ``status()`` (``swarm status --json``,
under "streams")::

    {"streams": [{"series": "cpu", "home": "server", "state": "serving", "moves": 1,
                  "moved_from": "laptop", "moved_s": 42.0, "events": 120, "kept": 12}],
     "hosting": [{"producer": "phone", "series": "cpu", "applied": 118, "checkpoint": 108}]}

Not covered here: a producer's own restart loses the events it kept in memory (the checkpoint
and the events after it up to the crash are gone with it; numbering continues after the
newest checkpoint).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from homeswarm.errors import InvalidArgument, ProtocolViolation, SwarmError
from homeswarm.kernels import (
    Checkpoint,
    StreamEvent,
    StreamInstance,
    StreamProducer,
    anomaly,
    anomaly_model,
)
from homeswarm.placement import Mesh
from homeswarm.wire import Field, Schema

from ._placement_service import keep_mesh
from ._service import Service

if TYPE_CHECKING:
    from homeswarm.transports import Connection

    from ._peer import Peer

log = logging.getLogger("swarm.streams")

KERNEL = "anomaly"
CHECK_S = 0.25  # how often the producer looks at its instances' homes
REQUEST_TIMEOUT_S = 1.0  # an open or feed this long unanswered: the home is tried again later
FEED_MAX = 200  # events in one feed (a host's loop holds ~0.3 s for them at most)
PART_CHARS = 24_000  # base64 characters in one vault entry of a checkpoint
MAX_PARTS = 64  # a checkpoint of more is refused (1.1 MB: a telemetry model is ~25-50 KB)
IDLE_S = 900.0  # a hosted instance no producer fed for this long is let go (it moved away)
RECENT = 2 * FEED_MAX  # scores a host keeps per instance, to answer a feed sent again
HISTORY = 2048  # the scores kept per stream, for tests: (seq, value, raw, likelihood)
PREFIX = "state/anomaly/"
WIRE_VERSION = 1

_NUMBER = Field("value", int, float)
_OPEN = Schema(
    "streams.open",
    Field("v", int, equals=WIRE_VERSION),
    Field("series", str, least=1, most=128),
    Field("scope", str, least=1, most=16),
    Field("acked", int, least=0),
    Field("params", dict, most=64, keys=Field("name", str, most=64), values=_NUMBER),
)
_EVENT = Field(
    "event",
    list,
    least=3,
    most=3,
    valid=lambda e: (
        isinstance(e[0], int)
        and not isinstance(e[0], bool)
        and e[0] > 0
        and (e[1] is None or isinstance(e[1], int | float))
        and isinstance(e[2], int | float)
        and not isinstance(e[2], bool)
    ),
    says="an event is [seq, time or null, value]",
)
_FEED = Schema(
    "streams.feed",
    Field("v", int, equals=WIRE_VERSION),
    Field("series", str, least=1, most=128),
    Field("epoch", int, least=1),
    Field("events", list, most=FEED_MAX, items=_EVENT),
    Field("scored", int, least=0, optional=True),
)
_SCORES = Field(
    "scores",
    list,
    most=FEED_MAX,
    items=Field(
        "score",
        list,
        least=3,
        most=3,
        valid=lambda x: all(isinstance(v, int | float) and not isinstance(v, bool) for v in x),
    ),
)
_CLOSE = Schema(
    "streams.close",
    Field("v", int, equals=WIRE_VERSION),
    Field("series", str, least=1, most=128),
)


def state_prefix(producer: str, series: str) -> str:
    """Where the checkpoints of ``producer``'s ``series`` live in the vault (one per host)."""
    return f"{PREFIX}{producer}/{series}/"


@dataclass
class Outgoing:
    """One of this device's series, carried to its instance (the producer's side)."""

    series: str
    id: int  # in the mesh
    producer: StreamProducer
    params: dict[str, Any]
    home: str | None = None  # the device the current epoch runs on (None: not open)
    last_home: str | None = None  # where it last served
    state: str = "placing"  # placing, opening, behind, serving, parked
    moves: int = 0
    moved_from: str | None = None
    moved_at: float | None = None
    scored: int = 0  # the last seq whose score went to the watch
    served_at: float | None = None  # when the current home first answered a feed
    history: collections.deque[tuple[int, float, float, float]] = field(
        default_factory=lambda: collections.deque(maxlen=HISTORY)
    )


@dataclass
class Hosted:
    """An instance this device runs for a producer (the host's side)."""

    producer: str
    series: str
    scope: str
    instance: StreamInstance
    stored: int  # the last event the newest checkpoint written here covers
    checkpoint_at: float  # when it was written (or the instance started)
    fed_at: float
    parts: int = 0  # parts of our own checkpoint in the vault
    # the latest scores by seq: a feed whose answer was lost is sent again, and answered
    recent: dict[int, tuple[float, float]] = field(default_factory=dict)
    confirmed: int = 0  # the producer has the scores up to this event (its feeds say so)


Judge = Callable[[str, float, float, float], object]  # (series, value, likelihood, now)


class StreamService(Service):
    """Producer and host of this device's stateful anomaly streams (see the module)."""

    name = "streams"

    def __init__(
        self,
        *,
        hosted: tuple[str, ...] = ("cpu",),
        checkpoint_s: float = 300.0,
        params: Callable[[str], dict[str, Any]] | None = None,
    ) -> None:
        self.hosted = hosted
        self.checkpoint_s = checkpoint_s
        self._params = params or (lambda series: {})
        self.needs = anomaly.needs
        self.peer: Peer | None = None
        self.mesh: Mesh | None = None
        self.out: dict[str, Outgoing] = {}
        self.hosting: dict[tuple[str, str], Hosted] = {}
        self.judge: Judge | None = None  # the watch service's, when it runs
        self._homes: dict[str, tuple[Any, ...]] = {}
        self._roster_moved = False
        self._wake = trio.Event()
        self.counts: collections.Counter[str] = collections.Counter()

    # ---- running -----------------------------------------------------------------------------

    async def run(self, peer: Peer, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.peer = peer
        self.mesh = Mesh(config=self._placement().config)
        task_status.started()
        while True:
            with trio.move_on_after(CHECK_S):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.step()

    def _placement(self) -> Any:
        assert self.peer is not None
        placement = self.peer.services.get("kernels")
        if placement is None:
            raise InvalidArgument("the stream service needs the placement service")
        return placement

    @property
    def me(self) -> str:
        assert self.peer is not None
        return self.peer.identity.device_id

    def roster_changed(self, devices: list[str]) -> None:
        self._roster_moved = True

    # ---- the producer ------------------------------------------------------------------------

    def emit(self, series: str, value: float, when: float | None) -> None:
        """A new row of one of this device's series: numbered, kept, sent soon."""
        s = self.out.get(series)
        if s is None:
            assert self.mesh is not None
            ids = self.mesh.add(KERNEL, self.needs, 1)
            s = self.out[series] = Outgoing(
                series, int(ids[0]), StreamProducer(series), dict(self._params(series))
            )
        s.producer.emit(value, when)
        self._wake.set()

    async def step(self) -> None:
        """One round of the producer: keep the mesh, then bring each stream to its home."""
        mesh = self.mesh
        if mesh is None or not len(mesh):
            self._let_go_idle()
            return
        if any(mesh.instance(s.id)["home"] not in (None, self.me) for s in self.out.values()):
            assert self.peer is not None
            await self.peer.radio()  # events are nobody's wait: they ride the next burst
        view = self._placement().view()
        changes, self._homes = keep_mesh(mesh, view, self._homes, self._roster_moved)
        self._roster_moved = False
        if changes:
            log.info("streams: re-placed: %s", "; ".join(str(c.to_json()) for c in changes))
        status = {d.id: d.status for d in view}
        for s in list(self.out.values()):
            await self._carry(s, mesh, status)
        self._let_go_idle()

    async def _carry(self, s: Outgoing, mesh: Mesh, status: dict[str, str]) -> None:
        row = mesh.instance(s.id)
        target: str | None = row["home"]
        if target is None:
            s.state = "parked"
            return
        if s.home is not None and s.home != target:
            await self._hand_over(s, status)
        if status.get(target) != "alive":
            return  # (a suspect home: wait until it answers or is declared dead)
        if s.home is None:
            if not await self._open(s, target):
                return
            if row["state"] == "migrating":  # it serves again
                mesh.settle([s.id])
        await self._feed(s)

    async def _hand_over(self, s: Outgoing, status: dict[str, str]) -> None:
        """The mesh moved ``s`` away from a home that still runs: that home checkpoints and
        lets go first (a planned move); a home that died says nothing, and the new one
        replays."""
        old, s.home = s.home, None
        assert old is not None
        if status.get(old) != "alive":
            return
        reply = await self._call(
            old, {"op": "streams.close", "v": WIRE_VERSION, "series": s.series}
        )
        if isinstance(reply, dict):
            self._acknowledge(s, reply)

    async def _open(self, s: Outgoing, target: str) -> bool:
        s.state = "opening"
        p = s.producer
        body = {
            "op": "streams.open",
            "v": WIRE_VERSION,
            "series": s.series,
            "scope": self.needs.scope,
            "acked": p.acked,
            "params": s.params,
        }
        reply = await self._call(target, body)
        if not isinstance(reply, dict):
            return False
        applied = reply.get("applied")
        if reply.get("behind") is not None or not isinstance(applied, int):
            s.state = "behind"
            self.counts["behind"] += 1
            return False
        if s.last_home is None:  # this producer's first home: where the stream stands
            p.continue_after(applied)
            s.scored = applied
        # from the last event scored here, if the home has it: a feed whose answer was lost
        # (a timeout) is sent again, and the home answers from its recent scores
        p.resume(max(p.acked, min(applied, s.scored)))
        now = trio.current_time()
        if s.last_home is not None and s.last_home != target:
            s.moves += 1
            s.moved_from, s.moved_at = s.last_home, now
            self.counts["moves"] += 1
            log.warning(
                "streams: %s moved from %s to %s (from event %d)",
                s.series,
                self._name(s.last_home),
                self._name(target),
                applied,
            )
        s.home = s.last_home = target
        s.state, s.served_at = "serving", None
        self.counts["opened"] += 1
        return True

    async def _feed(self, s: Outgoing) -> None:
        p = s.producer
        assert s.home is not None
        while True:
            events = p.to_send(FEED_MAX)
            if not events and s.served_at is not None:
                return
            body = {
                "op": "streams.feed",
                "v": WIRE_VERSION,
                "series": s.series,
                "epoch": p.epoch,
                "events": [[e.seq, e.when, e.value] for e in events],
                "scored": s.scored,
            }
            reply = await self._call(s.home, body)
            if not isinstance(reply, dict) or reply.get("reopen"):
                s.home, s.state = None, "opening"  # open again: the same path as a move
                self.counts["reopened"] += 1
                return
            if s.served_at is None:
                s.served_at = trio.current_time()
            values = {e.seq: e.value for e in events}
            now = trio.current_time()
            for seq, raw, likelihood in reply.get("scores") or ():
                if seq not in values:
                    continue  # (not an event of this feed: a confused host)
                s.history.append((seq, values[seq], raw, likelihood))
                if seq > s.scored:
                    s.scored = seq
                    if self.judge is not None:
                        self.judge(s.series, values[seq], likelihood, now)
            self._acknowledge(s, reply)
            if not events:
                return

    def _acknowledge(self, s: Outgoing, reply: dict[str, Any]) -> None:
        stored, epoch = reply.get("stored"), reply.get("epoch")
        if isinstance(stored, int) and isinstance(epoch, int) and stored > s.producer.acked:
            try:
                s.producer.acknowledged(stored, epoch)
            except InvalidArgument as exc:  # a host acknowledging more than it was sent
                log.warning("streams: %s: %s", s.series, exc)

    async def _call(self, device: str, body: dict[str, Any]) -> Any:
        """A request to ``device`` (this one: served in place); None if it failed."""
        peer = self.peer
        assert peer is not None
        op = body["op"].partition(".")[2]
        try:
            if device == self.me:
                return await self.serve(self.me, op, body)
            transport = peer.transport
            assert transport is not None
            with trio.fail_after(REQUEST_TIMEOUT_S):
                open_ = transport.connections(device)
                conn = open_[0] if open_ else await transport.dial(device, peer.addrs_of(device))
                return await conn.request(body, timeout=REQUEST_TIMEOUT_S)
        except (SwarmError, trio.TooSlowError) as exc:
            log.info("streams: %s from %s failed: %s", body["op"], self._name(device), exc)
            self.counts["failed"] += 1
            return None

    # ---- the host ----------------------------------------------------------------------------

    async def handle(self, conn: Connection, op: str, body: dict[str, Any]) -> Any:
        return await self.serve(conn.peer_id, op, body)

    async def serve(self, producer: str, op: str, body: dict[str, Any]) -> Any:
        """A producer's request (``producer``: who it is, as its connection proved)."""
        if op == "open":
            return await self._serve_open(producer, _OPEN.check(body))
        if op == "feed":
            return await self._serve_feed(producer, _FEED.check(body))
        if op == "close":
            got = _CLOSE.check(body)
            hosted = self.hosting.get((producer, got["series"]))
            if hosted is None:
                return {}
            await self._checkpoint(hosted, force=True)
            del self.hosting[(producer, got["series"])]
            return {"stored": hosted.stored, "epoch": hosted.instance.epoch}
        raise ProtocolViolation(f"unknown operation streams.{op}")

    async def _serve_open(self, producer: str, got: dict[str, Any]) -> dict[str, Any]:
        key = (producer, got["series"])
        now = trio.current_time()
        hosted = self.hosting.get(key)
        if hosted is not None and hosted.instance.applied >= got["acked"]:
            hosted.fed_at = now  # (the producer lost an answer: it keeps what it has)
            return {"applied": hosted.instance.applied}
        node = self._vault()
        if node is None or got["scope"] not in node.replica.readable:
            return {"refused": f"this device holds no vault of {got['scope']} data"}
        stream = f"{producer}/{got['series']}"
        found = self._newest(producer, got["series"])
        checkpoint, scores = found if found is not None else (None, {})
        have = checkpoint.applied if checkpoint is not None else 0
        if have < got["acked"]:
            self._sync()
            return {"behind": have}
        if checkpoint is None:
            try:
                model = anomaly_model(params=got["params"])
            except (InvalidArgument, ValueError, TypeError) as exc:
                raise InvalidArgument(f"streams: bad model parameters ({exc})") from None
            instance = StreamInstance(stream, model)
        else:
            instance = StreamInstance.restore(checkpoint, anomaly_model, stream=stream)
        self.hosting[key] = Hosted(
            producer, got["series"], got["scope"], instance, have, now, now, recent=dict(scores)
        )
        self.counts["restored" if checkpoint is not None else "started"] += 1
        log.info(
            "streams: serving %s of %s from event %d",
            got["series"],
            self._name(producer),
            have,
        )
        return {"applied": instance.applied}

    async def _serve_feed(self, producer: str, got: dict[str, Any]) -> dict[str, Any]:
        hosted = self.hosting.get((producer, got["series"]))
        if hosted is None:
            return {"reopen": True}
        instance = hosted.instance
        if got["epoch"] < instance.epoch:
            return {"reopen": True}  # an older start of the stream's producer: stale
        instance.epoch = got["epoch"]
        events = [StreamEvent(seq, when, float(value)) for seq, when, value in got["events"]]
        try:
            scored = instance.feed(events)
        except InvalidArgument as exc:  # a gap: start again from a checkpoint
            log.info("streams: %s of %s: %s", hosted.series, self._name(producer), exc)
            del self.hosting[(producer, got["series"])]
            return {"reopen": True}
        hosted.fed_at = trio.current_time()
        hosted.confirmed = max(hosted.confirmed, got["scored"] or 0)
        recent = hosted.recent
        for seq, x in scored:
            recent[seq] = (float(x.raw), float(x.likelihood))
        while len(recent) > RECENT:
            del recent[next(iter(recent))]
        await self._checkpoint(hosted)
        answers = [[e.seq, *recent[e.seq]] for e in events if e.seq in recent]
        return {"scores": answers, "stored": hosted.stored, "epoch": instance.epoch}

    async def _checkpoint(self, hosted: Hosted, *, force: bool = False) -> None:
        """Write the instance's checkpoint into the vault, when it is due (or ``force``d) and
        it applied something since; ``stored`` moves only once the write is durable."""
        instance = hosted.instance
        now = trio.current_time()
        if instance.applied <= hosted.stored:
            return
        if not force and now - hosted.checkpoint_at < self.checkpoint_s:
            return
        node = self._vault()
        if node is None:
            return
        data = instance.checkpoint().to_bytes()
        text = base64.b64encode(data).decode("ascii")
        parts = [text[i : i + PART_CHARS] for i in range(0, len(text), PART_CHARS)]
        if len(parts) > MAX_PARTS:
            log.warning("streams: a checkpoint of %d bytes is too big to store", len(data))
            return
        prefix = state_prefix(hosted.producer, hosted.series)
        mine = prefix + self.me
        manifest = {
            "applied": instance.applied,
            "parts": len(parts),
            "sha256": hashlib.sha256(data).hexdigest(),
            # the scores the producer may not have yet (this feed's answer may be lost, and this
            # device die): whoever restores the checkpoint answers the replay with them
            "scores": [[q, *x] for q, x in hosted.recent.items() if q > hosted.confirmed][
                -FEED_MAX:
            ],
        }
        puts = {mine: json.dumps(manifest)}
        puts.update({f"{mine}/{i}": json.dumps(part) for i, part in enumerate(parts)})
        deletes = [f"{mine}/{i}" for i in range(len(parts), hosted.parts)]
        for host, other in self._manifests(prefix).items():  # older ones of other hosts
            if host != self.me and other["applied"] <= instance.applied:
                deletes += [prefix + host, *(f"{prefix}{host}/{i}" for i in range(other["parts"]))]
        try:
            await node.write(puts, deletes, hosted.scope)
        except SwarmError as exc:
            log.warning("streams: the checkpoint of %s was not stored: %s", hosted.series, exc)
            return
        hosted.stored, hosted.checkpoint_at, hosted.parts = instance.applied, now, len(parts)
        self.counts["checkpoints"] += 1

    def latest(self, producer: str, series: str) -> Checkpoint | None:
        """The newest checkpoint of the stream this device's vault replica holds and can read
        (whole, and the digest right), or None."""
        found = self._newest(producer, series)
        return found[0] if found is not None else None

    def _newest(
        self, producer: str, series: str
    ) -> tuple[Checkpoint, dict[int, tuple[float, float]]] | None:
        """``latest``, with the scores its manifest kept (those its producer may lack)."""
        node = self._vault()
        if node is None:
            return None
        prefix = state_prefix(producer, series)
        stream = f"{producer}/{series}"
        found = sorted(self._manifests(prefix).items(), key=lambda m: -m[1]["applied"])
        for host, manifest in found:
            texts = []
            for i in range(manifest["parts"]):
                entry = node.get(f"{prefix}{host}/{i}")
                value = json.loads(entry.text) if entry is not None else None
                if not isinstance(value, str):
                    break
                texts.append(value)
            else:
                try:
                    data = base64.b64decode("".join(texts), validate=True)
                    if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
                        continue  # (parts of two checkpoints: the rest is on its way)
                    checkpoint = Checkpoint.from_bytes(data)
                except (ValueError, InvalidArgument):
                    continue
                if checkpoint.stream == stream and checkpoint.applied == manifest["applied"]:
                    scores = {
                        q: (float(raw), float(likelihood))
                        for q, raw, likelihood in manifest["scores"]
                        if q <= checkpoint.applied
                    }
                    return checkpoint, scores
        return None

    def _manifests(self, prefix: str) -> dict[str, dict[str, Any]]:
        node = self._vault()
        out: dict[str, dict[str, Any]] = {}
        if node is None:
            return out
        for entry in node.items(prefix):
            host = entry.key[len(prefix) :]
            if "/" in host:
                continue
            try:
                value = json.loads(entry.text)
            except ValueError:
                continue
            if (
                isinstance(value, dict)
                and isinstance(value.get("applied"), int)
                and isinstance(value.get("parts"), int)
                and 0 < value["parts"] <= MAX_PARTS
                and isinstance(value.get("sha256"), str)
                and _SCORES.problem(value.get("scores", [])) is None
            ):
                value.setdefault("scores", [])
                out[host] = value
        return out

    def _vault(self) -> Any:
        assert self.peer is not None
        vault = self.peer.services.get("vault")
        return getattr(vault, "node", None)

    def _sync(self) -> None:
        """This replica is behind: ask every alive member for what it lacks now."""
        node = self._vault()
        if node is None:
            return
        for d in self._placement().view():
            if d.status == "alive" and not d.local:
                node.sync_soon(d.id)

    def _let_go_idle(self) -> None:
        now = trio.current_time()
        for key, hosted in list(self.hosting.items()):
            if now - hosted.fed_at >= IDLE_S:
                del self.hosting[key]

    # ---- status ------------------------------------------------------------------------------

    def _name(self, device: str | None) -> str:
        if device is None:
            return "-"
        if self.peer is not None:
            cert = self.peer.roster.certificate(device)
            if cert is not None and cert.name:
                return cert.name
        return device[-8:]

    def status(self) -> dict[str, Any] | None:
        if not self.out and not self.hosting:
            return None
        now = trio.current_time()
        streams = []
        for s in self.out.values():
            home = self.mesh.instance(s.id)["home"] if self.mesh is not None else None
            streams.append(
                {
                    "series": s.series,
                    "home": self._name(home) if home else None,
                    "state": s.state,
                    "moves": s.moves,
                    "moved_from": self._name(s.moved_from) if s.moved_from else None,
                    "moved_s": None if s.moved_at is None else round(now - s.moved_at, 1),
                    "events": s.producer.last,
                    "kept": len(s.producer.kept),
                }
            )
        hosting = [
            {
                "producer": self._name(h.producer),
                "series": h.series,
                "applied": h.instance.applied,
                "checkpoint": h.stored,
            }
            for h in self.hosting.values()
        ]
        return {"streams": streams, "hosting": hosting}

    def metrics(self) -> Iterator[Any]:
        from ._metrics import counted

        yield counted(
            "swarm_streams_events",
            "what this device's anomaly streams did (opened, moves, checkpoints, failed...)",
            ["what"],
            self.counts,
        )

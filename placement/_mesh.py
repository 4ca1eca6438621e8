"""The kernel mesh: long-lived kernel instances, registered in columns and placed in batches.

A long-lived instance (an HTM per stream, a recall index per scope, a learning job's local step)
has an id, a kernel, its needs (and so its scope), a home device and a state. A person's swarm
may hold millions of them, so the registry is columns of numpy arrays, not an object each:

  ``kernel``  uint16  index into the mesh's kernel names
  ``spec``    uint32  index into the interned (kernel, needs) pairs
  ``scope``   uint8   index into ``SCOPES`` (the spec's, repeated for a fast filter)
  ``home``    int32   index into the mesh's devices; -1 while parked
  ``state``   uint8   index into ``STATES``

The id of an instance is its row. That is 12 bytes an instance (``bytes_per_instance`` counts
the arrays' spare room too: under 24 after a growth).

Placing is the policy's, in batches. Instances of one (kernel, needs) form a group; a batch is
placed group by group, in the order the specs were first registered, and within a group exactly
as ``place`` would place its instances one after another, each time on a view where the devices
already chosen carry one more instance (their ``queue``) and that much less free memory:

- the filter is ``place``'s own (one call per group: status, relay, scope, executor, kernel,
  accelerator, memory, battery floor), on a view where each device's ``queue`` counts the mesh's
  instances on it and its ``memory_free_mb`` is what they leave free;
- capacity: a device takes instances while its free memory covers one more (``memory_mb``);
- the score of the ``k``-th more instance on a device is ``place``'s score with ``queue + k``,
  computed by numpy with the same operations in the same order, so the same floats: the
  cost grows by the device's compute per instance and the latency may cross the budget;
- the sequence of choices ``place`` would make is the ``n`` least of those (over budget, cost,
  device id) keys, found by one partition, not ``n`` decisions.

The mesh treats a view's ``queue`` and ``memory_free_mb`` as the device without the mesh's own
instances (the capacity it offers the mesh); instances it places add to both.

States (``TRANSITIONS``; an event from a state not listed is a bug, and raises):

  parked    --placed-->  running     placed from the registry, or again after a park
  running   --moved-->   migrating   its device died or may no longer run it: re-placed
  migrating --settled--> running     it resumed on its new home (``settle``)
  running, migrating --parked--> parked   no device may run it now (power, scopes): waits
  any but stopped --stopped--> stopped   ``stop``: its home gives it up; never placed again

A stopped instance keeps its row (ids stay stable) and is in no count, ``ps`` or batch.

``replace_dead(view, device)`` re-places every instance of a device that died; ``rebalance(view)``
re-places every instance whose home no longer admits it (unplugged below a floor, lost a scope,
ran out of memory) and tries the parked ones again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from homeswarm.errors import InvalidArgument
from homeswarm.kernels import Needs
from homeswarm.vocabulary import SCOPES

from ._policy import DEFAULT_CONFIG, PolicyConfig, place
from ._view import DeviceView

STATES = ("parked", "running", "migrating", "stopped")
PARKED, RUNNING, MIGRATING, STOPPED = range(4)
TRANSITIONS: dict[str, dict[str, str]] = {
    "parked": {"placed": "running", "stopped": "stopped"},
    "running": {"moved": "migrating", "parked": "parked", "stopped": "stopped"},
    "migrating": {
        "settled": "running",
        "parked": "parked",
        "moved": "migrating",
        "stopped": "stopped",
    },
}
_NONE = 255
REGISTRY_VERSION = 1


def _table(event: str) -> npt.NDArray[np.uint8]:
    """The transition table's column for ``event``: next state by state (255: not allowed)."""
    out = np.full(256, _NONE, dtype=np.uint8)
    for state, events in TRANSITIONS.items():
        if event in events:
            out[STATES.index(state)] = STATES.index(events[event])
    return out


_EVENTS = {e: _table(e) for e in ("placed", "moved", "settled", "parked", "stopped")}
_COLUMNS: tuple[tuple[str, type[np.generic]], ...] = (
    ("kernel", np.uint16),
    ("spec", np.uint32),
    ("scope", np.uint8),
    ("home", np.int32),
    ("state", np.uint8),
)


@dataclass(frozen=True, slots=True)
class MeshChange:
    """What a batch did: instances placed (or re-placed) by device name, and those parked."""

    placed: dict[str, int]
    parked: int
    moved: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"placed": dict(self.placed), "parked": self.parked, "moved": self.moved}


class Mesh:
    """The registry of long-lived kernel instances and its batch placement (see the module)."""

    def __init__(self, *, config: PolicyConfig = DEFAULT_CONFIG, capacity: int = 1024) -> None:
        self.config = config
        self._n = 0
        self._cols: dict[str, npt.NDArray[Any]] = {
            name: np.zeros(max(1, capacity), dtype=dtype) for name, dtype in _COLUMNS
        }
        self._cols["home"][:] = -1
        self._kernels: list[str] = []
        self._kernel_index: dict[str, int] = {}
        self._specs: list[tuple[str, Needs]] = []
        self._spec_index: dict[tuple[str, Needs], int] = {}
        self._devices: list[str] = []
        self._names: list[str] = []
        self._device_index: dict[str, int] = {}
        self._count = np.zeros(0, dtype=np.int64)  # instances on each device
        self._memory = np.zeros(0, dtype=np.float64)  # the memory they take there

    # ---- the registry ------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n

    def column(self, name: str) -> npt.NDArray[Any]:
        """A read-only view of one column (``kernel``, ``spec``, ``scope``, ``home``, ``state``)."""
        out = self._cols[name][: self._n]
        out.flags.writeable = False
        return out

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self._cols.values())

    def bytes_per_instance(self) -> float:
        """The registry's bytes (its arrays, spare room included) over its instances."""
        return self.nbytes / max(1, self._n)

    def add(self, kernel: str, needs: Needs, count: int = 1) -> npt.NDArray[np.int64]:
        """Register ``count`` parked instances of ``kernel`` with ``needs``; their ids."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InvalidArgument(f"count must be a non-negative integer, got {count!r}")
        if not isinstance(kernel, str) or not kernel:
            raise InvalidArgument("an instance needs a kernel name")
        spec = self._spec(kernel, needs)
        start, end = self._n, self._n + count
        self._grow(end)
        c = self._cols
        c["kernel"][start:end] = self._kernel_index[kernel]
        c["spec"][start:end] = spec
        c["scope"][start:end] = SCOPES.index(needs.scope)
        c["home"][start:end] = -1
        c["state"][start:end] = PARKED
        self._n = end
        return np.arange(start, end, dtype=np.int64)

    def instance(self, id: int) -> dict[str, Any]:
        """One instance as a row: its id, kernel, scope, needs, home (name or None), state."""
        if not 0 <= id < self._n:
            raise InvalidArgument(f"no instance {id}")
        c = self._cols
        kernel, needs = self._specs[int(c["spec"][id])]
        home = int(c["home"][id])
        return {
            "id": int(id),
            "kernel": kernel,
            "scope": needs.scope,
            "needs": needs,
            "home": self._devices[home] if home >= 0 else None,
            "state": STATES[int(c["state"][id])],
        }

    def ps(self) -> list[dict[str, Any]]:
        """Instances by device, kernel and state: one row each, with a count (``kernels ps``);
        the stopped left out."""
        home, spec, state = (self.column(k) for k in ("home", "spec", "state"))
        live = state != STOPPED
        home, spec, state = home[live], spec[live], state[live]
        keys = (home.astype(np.int64) + 1) * (1 << 40) + spec.astype(np.int64) * 4 + state
        unique, counts = np.unique(keys, return_counts=True)
        rows = []
        for key, n in zip(unique.tolist(), counts.tolist(), strict=True):
            h, rest = divmod(key, 1 << 40)
            s, st = divmod(rest, 4)
            kernel, needs = self._specs[s]
            rows.append(
                {
                    "device": self._names[h - 1] if h else None,
                    "device_id": self._devices[h - 1] if h else None,
                    "kernel": kernel,
                    "scope": needs.scope,
                    "state": STATES[st],
                    "instances": n,
                }
            )
        return rows

    def on(self, device: str) -> npt.NDArray[np.int64]:
        """The ids of the instances whose home is ``device`` (an id)."""
        j = self._device_index.get(device)
        if j is None:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self._cols["home"][: self._n] == j)

    def counts(self) -> dict[str, int]:
        """Instances on each device, by device id (devices with none left out)."""
        return {d: int(n) for d, n in zip(self._devices, self._count.tolist(), strict=True) if n}

    def live(self) -> int:
        """Instances not stopped."""
        return int((self._cols["state"][: self._n] != STOPPED).sum())

    def stop(self, kernel: str, count: int | None = None) -> npt.NDArray[np.int64]:
        """Stop ``count`` instances of ``kernel`` (all without a count), the newest first; their
        ids. Their homes give them up at once."""
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise InvalidArgument(f"count must be a whole number, got {count!r}")
        k = self._kernel_index.get(kernel)
        if k is None:
            return np.zeros(0, dtype=np.int64)
        c = self._cols
        ids = np.flatnonzero((c["kernel"][: self._n] == k) & (c["state"][: self._n] != STOPPED))
        if count is not None:
            ids = ids[len(ids) - min(max(count, 0), len(ids)) :]
        self._unhome(ids)
        self._transition(ids, "stopped")
        return ids

    def registry(self) -> bytes:
        """What outlives the process: each instance's kernel and needs, and whether it was
        stopped (its home and state are the policy's to find again). ``restore`` reads it."""
        import io
        import json

        c = self._cols
        specs = [[kernel, dataclasses.asdict(needs)] for kernel, needs in self._specs]
        out = io.BytesIO()
        np.savez_compressed(
            out,
            version=np.array([REGISTRY_VERSION]),
            specs=np.frombuffer(json.dumps(specs).encode(), dtype=np.uint8),
            spec=c["spec"][: self._n],
            stopped=c["state"][: self._n] == STOPPED,
        )
        return out.getvalue()

    @classmethod
    def restore(cls, data: bytes, *, config: PolicyConfig = DEFAULT_CONFIG) -> Mesh:
        """A mesh from ``registry()``'s bytes: the same ids, the stopped stopped, the others
        parked (to be placed on the view of now). ``InvalidArgument`` for anything else."""
        import io
        import json

        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                version = int(z["version"][0])
                if version != REGISTRY_VERSION:
                    raise InvalidArgument(f"a mesh registry of version {version}")
                specs = json.loads(bytes(z["specs"]).decode())
                spec = np.asarray(z["spec"], dtype=np.int64)
                stopped = np.asarray(z["stopped"], dtype=bool)
            pairs = [(str(kernel), Needs(**fields)) for kernel, fields in specs]
            agree = len(spec) == len(stopped) and len(set(pairs)) == len(pairs)
            if not agree or (len(spec) and not 0 <= spec.min() <= spec.max() < len(pairs)):
                raise InvalidArgument("a mesh registry whose columns disagree")
        except InvalidArgument:
            raise
        except Exception as exc:  # a zip, npy or JSON that is not ours, a Needs it refuses
            raise InvalidArgument(f"not a mesh registry ({type(exc).__name__})") from None
        mesh = cls(config=config, capacity=max(1, len(spec)))
        for kernel, needs in pairs:
            mesh._spec(kernel, needs)  # the same spec numbers, in the same order
        kernel_of = np.array([mesh._kernel_index[k] for k, _ in pairs] or [0], dtype=np.uint16)
        scope_of = np.array([SCOPES.index(n.scope) for _, n in pairs] or [0], dtype=np.uint8)
        n, c = len(spec), mesh._cols
        c["spec"][:n] = spec
        c["kernel"][:n] = kernel_of[spec]
        c["scope"][:n] = scope_of[spec]
        c["home"][:n] = -1
        c["state"][:n] = np.where(stopped, STOPPED, PARKED)
        mesh._n = n
        return mesh

    def settle(self, ids: npt.ArrayLike) -> None:
        """Migrating instances resumed on their new home: running."""
        self._transition(np.asarray(ids, dtype=np.int64), "settled")

    # ---- batches -----------------------------------------------------------------------------

    def place(self, view: Sequence[DeviceView], ids: npt.ArrayLike | None = None) -> MeshChange:
        """Place the parked instances (or ``ids``, all parked) on ``view``."""
        state = self._cols["state"][: self._n]
        if ids is None:
            chosen = np.flatnonzero(state == PARKED)
        else:
            chosen = self._ids(ids)
            if (state[chosen] != PARKED).any():
                raise InvalidArgument("only parked instances are placed; re-place the others")
        return self._batch(view, chosen, "placed")

    def replace_dead(self, view: Sequence[DeviceView], device: str) -> MeshChange:
        """``device`` died: re-place every instance it held on ``view`` (where it is not alive)."""
        if any(d.id == device and d.status == "alive" for d in view):
            raise InvalidArgument(f"{device} is alive in this view")
        return self._move(view, self.on(device))

    def rebalance(self, view: Sequence[DeviceView]) -> MeshChange:
        """After a change of power (or scopes, memory): re-place every instance whose home may
        no longer run it, then try the parked ones again."""
        self._learn(view)
        by_id = {d.id: d for d in view}
        home = self._cols["home"][: self._n]
        spec = self._cols["spec"][: self._n]
        placed = home >= 0
        # which (spec, device) pairs the policy still allows: one decision per pair in use,
        # on the device as it is (its load from the mesh aside: a device never sheds instances
        # for room, only for a rule: status, scope, battery floor, its own free memory...)
        n_dev = len(self._devices)
        keys = np.unique(spec[placed].astype(np.int64) * n_dev + home[placed])
        bad_pairs = []
        for key in keys.tolist():
            s, j = divmod(key, n_dev)
            kernel, needs = self._specs[s]
            d = by_id.get(self._devices[j])
            if d is None or not place(kernel, needs, [d], config=self.config).ok:
                bad_pairs.append(key)
        moving = np.zeros(0, dtype=np.int64)
        if bad_pairs:
            pair = spec.astype(np.int64) * n_dev + home
            moving = np.flatnonzero(placed & np.isin(pair, bad_pairs))
        change = self._move(view, moving)
        again = self.place(view)
        placed_all = dict(change.placed)
        for k, v in again.placed.items():
            placed_all[k] = placed_all.get(k, 0) + v
        return MeshChange(placed_all, again.parked, change.moved)

    # ---- the machinery -----------------------------------------------------------------------

    def _move(self, view: Sequence[DeviceView], ids: npt.NDArray[np.int64]) -> MeshChange:
        self._unhome(ids)
        self._transition(ids, "moved")
        change = self._batch(view, ids, "settled_later")
        return replace(change, moved=len(ids))

    def _batch(
        self, view: Sequence[DeviceView], ids: npt.NDArray[np.int64], how: str
    ) -> MeshChange:
        """Place ``ids`` (not homed now) group by group; ``how``: ``placed`` (parked ones:
        running once placed) or ``settled_later`` (moving ones: migrating until settled)."""
        self._learn(view)
        by_id = {d.id: d for d in view}
        c = self._cols
        spec = c["spec"][ids]
        order = np.argsort(spec, kind="stable")
        ids, spec = ids[order], spec[order]
        bounds = np.flatnonzero(np.diff(spec)) + 1
        placed = np.zeros(len(self._devices), dtype=np.int64)
        parked = 0
        for group in np.split(ids, bounds) if len(ids) else []:
            s = int(c["spec"][group[0]])
            counts = self._group(s, len(group), by_id)
            homes = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
            got = len(homes)
            c["home"][group[:got]] = homes
            np.add.at(placed, homes, 1)
            self._count += counts
            self._memory += counts * self._specs[s][1].memory_mb
            if how == "placed":
                self._transition(group[:got], "placed")
            rest = group[got:]
            if len(rest):
                parked += len(rest)
                if how != "placed":
                    self._transition(rest, "parked")
        names = {self._names[j]: int(n) for j, n in enumerate(placed.tolist()) if n}
        return MeshChange(names, parked)

    def _group(self, s: int, n: int, by_id: dict[str, DeviceView]) -> npt.NDArray[np.int64]:
        """How many of ``n`` instances of spec ``s`` each device takes (by device index), as
        ``place`` would choose them one after another."""
        kernel, needs = self._specs[s]
        config = self.config
        view = [self._loaded(d, self._device_index[d.id]) for d in by_id.values()]
        decision = place(kernel, needs, view, config=config)
        out = np.zeros(len(self._devices), dtype=np.int64)
        if not decision.ok or n == 0:
            return out
        keys_over: list[npt.NDArray[np.bool_]] = []
        keys_cost: list[npt.NDArray[np.float64]] = []
        index: list[int] = []
        m = needs.memory_mb
        stateful_s = config.stateful_battery_s if needs.stateful else 0.0
        for cand in decision.candidates:  # ranked: by (over, cost, id) of the next instance
            d = cand.device
            free = d.memory_free_mb
            # the policy admits the k-th more instance while free - k*m still covers m
            room = n if m <= 0 else max(0, min(n, int(free // m) + 1))
            while room > 0 and free - (room - 1) * m < m:
                room -= 1
            if room <= 0:
                continue
            q = d.queue + np.arange(room, dtype=np.float64)
            # place's score with queue q, the same operations in the same order
            latency = (cand.network_s + q * cand.compute_s) + cand.compute_s
            cost = latency + config.joule_s * cand.energy_j * cand.price
            if d.on_battery and stateful_s:
                cost = cost + stateful_s
            keys_over.append(latency > needs.latency_budget_s)
            keys_cost.append(cost)
            index.append(self._device_index[d.id])
        # the n least keys (over, cost, id): within budget first, then over it
        rank = sorted(range(len(index)), key=lambda i: self._devices[index[i]])
        left = n
        for over in (False, True):
            if left == 0:
                break
            costs = [keys_cost[i][keys_over[i] == over] for i in rank]
            total = sum(len(x) for x in costs)
            if total == 0:
                continue
            if total <= left:
                for i, x in zip(rank, costs, strict=True):
                    out[index[i]] += len(x)
                left -= total
                continue
            every = np.concatenate(costs)
            t = np.partition(every, left - 1)[left - 1]
            below = [int(np.searchsorted(x, t, side="left")) for x in costs]
            ties = [
                int(np.searchsorted(x, t, side="right")) - b
                for x, b in zip(costs, below, strict=True)
            ]
            left -= sum(below)
            for i, b, tie in zip(rank, below, ties, strict=True):
                take = min(tie, left)
                out[index[i]] += b + take
                left -= take
            left = 0
        return out

    def _loaded(self, d: DeviceView, j: int) -> DeviceView:
        """``d`` carrying the mesh's instances: more queue, less free memory."""
        n = int(self._count[j])
        if n == 0:
            return d
        return replace(
            d,
            queue=d.queue + n,
            memory_free_mb=max(0.0, d.memory_free_mb - float(self._memory[j])),
        )

    def _learn(self, view: Sequence[DeviceView]) -> None:
        for d in view:
            j = self._device_index.get(d.id)
            if j is None:
                self._device_index[d.id] = len(self._devices)
                self._devices.append(d.id)
                self._names.append(d.label)
            else:
                self._names[j] = d.label
        grow = len(self._devices) - len(self._count)
        if grow:
            self._count = np.concatenate([self._count, np.zeros(grow, dtype=np.int64)])
            self._memory = np.concatenate([self._memory, np.zeros(grow, dtype=np.float64)])

    def _unhome(self, ids: npt.NDArray[np.int64]) -> None:
        c = self._cols
        home = c["home"][ids]
        homed = home >= 0
        h = home[homed]
        self._count -= np.bincount(h, minlength=len(self._count))
        memory = np.array([n.memory_mb for _, n in self._specs])[c["spec"][ids][homed]]
        self._memory -= np.bincount(h, weights=memory, minlength=len(self._memory))
        self._memory[self._count == 0] = 0.0  # no drift once a device is empty
        c["home"][ids] = -1

    def _transition(self, ids: npt.NDArray[np.int64], event: str) -> None:
        if not len(ids):
            return
        state = self._cols["state"]
        new = _EVENTS[event][state[ids]]
        if (new == _NONE).any():
            bad = STATES[int(state[ids][new == _NONE][0])]
            raise InvalidArgument(f"an instance {bad} cannot be {event}")
        state[ids] = new

    def _ids(self, ids: npt.ArrayLike) -> npt.NDArray[np.int64]:
        out = np.unique(np.asarray(ids, dtype=np.int64))
        if len(out) and (out[0] < 0 or out[-1] >= self._n):
            raise InvalidArgument("no such instance")
        return out

    def _spec(self, kernel: str, needs: Needs) -> int:
        key = (kernel, needs)
        s = self._spec_index.get(key)
        if s is None:
            if kernel not in self._kernel_index:
                self._kernel_index[kernel] = len(self._kernels)
                self._kernels.append(kernel)
            s = self._spec_index[key] = len(self._specs)
            self._specs.append(key)
        return s

    def _grow(self, size: int) -> None:
        have = len(self._cols["state"])
        if size <= have:
            return
        new = max(size, 2 * have)
        for name, col in self._cols.items():
            more = np.zeros(new, dtype=col.dtype)
            more[:have] = col
            if name == "home":
                more[have:] = -1
            self._cols[name] = more

"""The kernel mesh and the performance counters in the peer: real peers on the memory network, in
virtual time (the ``swarm`` fixture of test_placement_swarm).

- every run placed from a device records where it ran and its compute; the placement service's
  calibration learns from it, and the next decisions (and ``--explain``) use what it learnt;
- ``kernels.start`` places long-lived instances in one batch, ``kernels.ps`` lists them by device,
  and when a device dies its instances move to the living ones; a power change rebalances.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from test_pairing import new_home
from test_pairing import running as running_daemon
from test_placement_cli import cli, one_line, run, running
from test_placement_swarm import LAPTOP, PHONE, SERVER, swarm, until

from homeswarm.cli._status import kernels_line
from homeswarm.errors import InvalidArgument
from homeswarm.kernels import Kernel, UnknownKernel
from homeswarm.placement import Executor, HeldKernel, InlineExecutor, RunResult, place
from homeswarm.swarm import load_identity
from homeswarm.swarm._control import ask_async


class Paced:
    """A device whose runs take ``seconds`` of compute (virtual time), and say so."""

    def __init__(self, seconds: float) -> None:
        self.inner = InlineExecutor(threaded=False)
        self.name = self.inner.name
        self.seconds = seconds

    async def run(self, kernel: Kernel, value: Any, *, timeout: float) -> RunResult:
        start = trio.current_time()
        await trio.sleep(self.seconds)
        result = await self.inner.run(kernel, value, timeout=timeout)
        return RunResult(result.output, result.executor, result.pid, trio.current_time() - start)

    def hosts(self) -> list[HeldKernel]:
        return self.inner.hosts()

    async def aclose(self) -> None:
        await self.inner.aclose()


def _paced(**seconds: float) -> dict[str, Executor | None]:
    return {name: Paced(s) for name, s in seconds.items()}


def _by_device(rows: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["device"]] = out.get(r["device"], 0) + r["instances"]
    return out


# ---- performance counters -----------------------------------------------------------------------


async def test_runs_on_a_slow_device_teach_the_policy(tmp_path, autojump_clock):
    # the server is declared the fastest, but its runs take 0.5 s for 7 ms declared
    executors = _paced(phone=0.025, laptop=0.01, server=0.5)
    async with swarm(tmp_path, executors=executors) as s:
        phone = s["phone"]
        first = await phone.run("medium", "x")
        assert first["device"] == "server", "before any run: the declaration"
        declared = next(e for e in first["explain"] if e["name"] == "server")["compute_ms"]
        where = [first["device"]]
        for _ in range(9):
            where.append((await phone.run("medium", "x"))["device"])
        # the declaration holds until three warm runs (after the first, a cold start) back
        # what the server showed, then it loses
        assert where[:4] == ["server"] * 4, where
        assert where.count("server") == 4, where
        assert where[-1] == "laptop"
        assert (await phone.run("echo", "x"))["device"] == "phone"

        stats = {r["device"]: r for r in (await phone.peer.control("kernels.stats", {}))["stats"]}
        server = stats["server"]
        assert server["kernel"] == "medium"
        assert server["runs"] == where.count("server")
        assert server["declared_ms"] == pytest.approx(declared, rel=0.05)
        assert server["observed_ms"] == pytest.approx(500, rel=0.05)
        assert server["first_ms"] == pytest.approx(500, rel=0.05)
        assert server["ratio"] > 50
        assert server["wait_ms"] is not None
        assert server["wait_ms"] < 50
        assert stats["phone"]["wait_ms"] is None, "a local run's wait is not known"
        assert stats["laptop"]["ratio"] == pytest.approx(
            stats["laptop"]["observed_ms"] / stats["laptop"]["declared_ms"], rel=0.05
        )

        # --explain shows the observed compute, not the declared one
        reply = await phone.run("medium", "x")
        explained = {e["name"]: e for e in reply["explain"]}
        assert explained["server"]["compute_ms"] == pytest.approx(500, rel=0.1)
        assert explained["laptop"]["verdict"] == "chosen"
        # and it is the policy's own estimate, from the service's calibration
        view = phone.service.view()
        decision = place(
            "medium",
            phone.service.registry.get("medium").needs,
            view,
            calibration=phone.service.calibration,
        )
        assert decision.device is not None
        assert decision.device.name == "laptop"


async def test_runs_from_another_device_teach_only_that_device(tmp_path, autojump_clock):
    async with swarm(tmp_path, executors=_paced(phone=0.01, laptop=0.01, server=0.3)) as s:
        await s["laptop"].run("medium", "x")
        assert (await s["phone"].peer.control("kernels.stats", {}))["stats"] == []
        assert len((await s["laptop"].peer.control("kernels.stats", {}))["stats"]) == 1


# ---- the mesh ---------------------------------------------------------------------------------


async def test_started_instances_are_placed_in_one_batch_and_listed_by_device(
    tmp_path, autojump_clock
):
    async with swarm(tmp_path) as s:
        control = s["laptop"].peer.control
        started = await control("kernels.start", {"kernel": "echo", "count": 300})
        assert started["kernel"] == "echo"
        assert started["scope"] == "public"
        assert started["ids"] == [0, 299]
        assert sum(started["placed"].values()) == 300
        assert started["parked"] == 0
        ps = await control("kernels.ps", {})
        assert ps["total"] == 300
        assert all(r["state"] == "running" for r in ps["instances"])
        assert _by_device(ps["instances"]) == started["placed"]
        (gauge,) = [m for m in s["laptop"].service.metrics() if m.name.endswith("_instances")]
        assert {sample.labels["device"]: sample.value for sample in gauge.samples} == {
            k: float(v) for k, v in started["placed"].items()
        }
        # `swarm status` says where the instances are
        status = s["laptop"].peer.status()
        section = status["kernels"]["instances"]
        assert (section["total"], section["parked"]) == (300, 0)
        names = {p["id"]: p["name"] for p in status["peers"]}
        assert {names[d]: n for d, n in section["by_device"].items()} == started["placed"]
        line = kernels_line(status["kernels"], names)
        assert line is not None
        homes = ", ".join(f"{d} {n}" for d, n in sorted(started["placed"].items()))
        assert line.endswith(f"instances {homes}")
        # private instances only where private data may be
        secret = await control("kernels.start", {"kernel": "secret", "count": 20})
        assert "phone" not in secret["placed"]
        assert sum(secret["placed"].values()) == 20


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ({"kernel": "echo", "count": 0}, "count"),
        ({"kernel": "echo", "count": True}, "count"),
        ({"kernel": "echo", "count": 10**7}, "count"),
        ({"kernel": ""}, "name a kernel"),
        ({"kernel": "echo", "scope": 3}, "scope"),
        ({"kernel": "secret", "scope": "public"}, "lower"),
    ],
)
async def test_bad_starts_are_the_callers_errors(tmp_path, autojump_clock, args, needle):
    async with swarm(tmp_path, (LAPTOP, SERVER)) as s:
        with pytest.raises(InvalidArgument, match=needle):
            await s["laptop"].peer.control("kernels.start", args)
        assert (await s["laptop"].peer.control("kernels.ps", {}))["total"] == 0


async def test_an_unknown_kernel_is_not_started(tmp_path, autojump_clock):
    async with swarm(tmp_path, (LAPTOP, SERVER)) as s:
        with pytest.raises(UnknownKernel):
            await s["laptop"].peer.control("kernels.start", {"kernel": "nope"})


async def test_a_dead_devices_instances_move_within_seconds(tmp_path, autojump_clock):
    async with swarm(tmp_path, (PHONE, LAPTOP, SERVER)) as s:
        laptop = s["laptop"]
        await laptop.peer.control("kernels.start", {"kernel": "medium", "count": 200})
        before = _by_device((await laptop.peer.control("kernels.ps", {}))["instances"])
        assert before.get("server", 0) > 0
        s.crash("server")
        crashed = trio.current_time()
        # suspected first: the instances stay (a missed probe is no death)
        await until(lambda: s.sees("laptop", "server") == "suspect", within=10.0, what="suspect")
        laptop.service.check_mesh()
        assert laptop.service.mesh.on(s["server"].id).size == before["server"]

        def moved() -> bool:
            return not laptop.service.mesh.on(s["server"].id).size

        await until(moved, within=30.0, what="the server's instances moved")
        took = trio.current_time() - crashed
        assert took < 15.0, took
        rows = (await laptop.peer.control("kernels.ps", {}))["instances"]
        after = _by_device(rows)
        assert "server" not in after
        assert sum(after.values()) == 200
        assert all(r["state"] == "running" for r in rows)
        assert s.sees("laptop", "server") in ("dead", "left", None), "moved once declared dead"


async def test_a_power_change_rebalances(tmp_path, autojump_clock):
    async with swarm(tmp_path, (PHONE, LAPTOP, SERVER)) as s:
        laptop = s["laptop"]
        await laptop.peer.control("kernels.start", {"kernel": "medium", "count": 60})
        on_phone = _by_device((await laptop.peer.control("kernels.ps", {}))["instances"])
        assert on_phone.get("phone", 0) > 0, on_phone
        s["phone"].peer.set_power(40.0, False)  # below the medium floor (50 %)

        def off_phone() -> bool:
            return not laptop.service.mesh.on(s["phone"].id).size

        await until(off_phone, within=20.0, what="the phone's instances moved")
        after = _by_device((await laptop.peer.control("kernels.ps", {}))["instances"])
        assert "phone" not in after
        assert sum(after.values()) == 60


# ---- the CLI ----------------------------------------------------------------------------------


async def test_kernels_start_ps_and_stats_as_a_user_types_them(tmp_path, capsys):
    async with running(tmp_path, (LAPTOP, SERVER)):
        laptop = str(tmp_path / "laptop")
        code, out, err = await cli(capsys, "kernels", "ps", "--home", laptop)
        assert code == 0, err
        assert out.startswith("no kernel instances")

        code, out, err = await cli(
            capsys, "kernels", "start", "echo", "--count", "50", "--home", laptop
        )
        assert code == 0, err
        assert out.startswith("started 50 echo instances (public): ")
        code, out, err = await cli(
            capsys, "kernels", "--json", "start", "secret", "--scope", "private", "--home", laptop
        )
        assert code == 0, err
        assert json.loads(out)["scope"] == "private"

        code, out, err = await cli(capsys, "kernels", "ps", "--home", laptop)
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].split() == ["DEVICE", "KERNEL", "SCOPE", "STATE", "INSTANCES"]
        assert lines[-1] == "51 instances"
        assert sum(int(line.split()[-1]) for line in lines[1:-1]) == 51
        code, out, err = await cli(capsys, "kernels", "ps", "--json", "--home", laptop)
        doc = json.loads(out)
        assert doc["total"] == 51
        assert {r["state"] for r in doc["instances"]} == {"running"}

        code, out, err = await cli(
            capsys, "kernels", "stop", "echo", "--count", "20", "--home", laptop
        )
        assert (code, out) == (0, "stopped 20 echo instances; 31 left in the mesh\n"), err
        code, out, err = await cli(capsys, "kernels", "--json", "stop", "echo", "--home", laptop)
        assert json.loads(out) == {"kernel": "echo", "stopped": 30, "left": 1}
        code, out, err = await cli(capsys, "kernels", "stop", "echo", "--home", laptop)
        assert (code, out) == (2, "")
        assert err.count("\n") == 1
        assert "no echo instances" in err
        code, out, err = await cli(capsys, "kernels", "ps", "--home", laptop)
        assert out.splitlines()[-1] == "1 instance"

        code, out, err = await cli(capsys, "kernels", "--stats", "--home", laptop)
        assert code == 0, err
        assert out.startswith("no runs placed from this device yet")
        for _ in range(3):
            code, _, err = await cli(capsys, "run", "echo", "x", "--home", laptop)
            assert code == 0, err
        code, out, err = await cli(capsys, "kernels", "--stats", "--json", "--home", laptop)
        (row,) = json.loads(out)["stats"]
        assert (row["kernel"], row["device"], row["runs"]) == ("echo", "laptop", 3)
        assert row["first_ms"] > 0
        assert row["observed_ms"] > 0
        code, out, err = await cli(capsys, "kernels", "--stats", "--home", laptop)
        header, line = out.splitlines()
        assert header.split() == [
            "KERNEL",
            "DEVICE",
            "RUNS",
            "FIRST",
            "DECLARED",
            "OBSERVED",
            "WAIT",
            "RATIO",
        ]
        assert line.split()[:3] == ["echo", "laptop", "3"]
        assert "±" in line


@pytest.mark.parametrize(
    "argv",
    [
        ["kernels", "start"],
        ["kernels", "start", "echo", "--count", "0"],
        ["kernels", "start", "echo", "--count", "x"],
        ["kernels", "start", "echo", "--scope", "secret"],
        ["kernels", "nope"],
    ],
    ids=" ".join,
)
def test_malformed_kernels_arguments_exit_2(tmp_path, capsys, argv):
    code, out, err = run(capsys, *argv, "--home", str(tmp_path))
    assert code == 2
    assert out == ""
    one_line(err)


@pytest.mark.parametrize("argv", [["kernels", "ps"], ["kernels", "--stats"]], ids=" ".join)
def test_ps_and_stats_without_a_peer_are_one_line_exit_1(tmp_path, capsys, argv):
    code, out, err = run(capsys, *argv, "--home", str(tmp_path))
    assert code == 1
    assert out == ""
    one_line(err)
    assert "no peer is running" in err


async def test_started_instances_outlive_a_restart_of_the_peer(tmp_path):
    ident = new_home(tmp_path / "laptop")
    async with running_daemon(ident):
        await ask_async(ident.home, "kernels.start", kernel="anomaly", count=40)
        await ask_async(ident.home, "kernels.stop", kernel="anomaly", count=10)
    assert (ident.home / "mesh").stat().st_mode & 0o777 == 0o600
    async with running_daemon(load_identity(ident.home)):
        ps = await ask_async(ident.home, "kernels.ps")
        assert ps["total"] == 30
        placed = await ask_async(ident.home, "kernels.ps")
        assert {r["device"] for r in placed["instances"]} <= {"laptop", None}
    (ident.home / "mesh").write_bytes(b"not a registry")
    async with running_daemon(load_identity(ident.home)):  # a bad file: one warning, no instances
        assert (await ask_async(ident.home, "kernels.ps"))["total"] == 0

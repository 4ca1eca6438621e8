"""The remote executor's messages off the wire: ``kernels.run`` requests and their replies are read
by the one wire checker (``homeswarm.wire``); anything else is ``MalformedMessage`` in one line.

(That a malformed request closes its connection, is logged, and the peer carries on is in
tests/swarm/test_placement_swarm.py, on a real swarm.)
"""

from __future__ import annotations

import pytest

from homeswarm.errors import MalformedMessage, ProtocolViolation
from homeswarm.placement import RunReply, RunRequest
from homeswarm.placement._executors import HeldKernel

HOST = {"kernel": "echo", "executor": "inline", "pid": 7, "runs": 2, "running": 0}
REQUEST = RunRequest("echo", {"x": [1, 2]}, "personal", 5.0).to_wire()
DONE = RunReply(
    True, [1], "ray", 42, 0.25, hosts=(HeldKernel("echo", "inline", 7, 2, 0),)
).to_wire()
FAILED = RunReply.refused("battery", "below the floor").to_wire()


def test_messages_round_trip():
    assert RunRequest.from_wire(REQUEST) == RunRequest("echo", {"x": [1, 2]}, "personal", 5.0)
    assert RunReply.from_wire(DONE).hosts == (HeldKernel("echo", "inline", 7, 2, 0),)
    assert RunReply.from_wire(DONE).output == [1]
    failed = RunReply.from_wire(FAILED)
    assert (failed.ok, failed.kind, failed.constraint) == (False, "refused", "battery")
    # a null input, a null pid and an int elapsed_s are all fine
    assert RunRequest.from_wire({**REQUEST, "input": None}).input is None
    assert RunReply.from_wire({**DONE, "pid": None, "elapsed_s": 1}).elapsed_s == 1.0


def test_keys_a_newer_peer_adds_are_ignored():
    # the rule of every message on our wire (homeswarm.wire)
    assert RunRequest.from_wire({**REQUEST, "priority": 3}).kernel == "echo"
    assert RunReply.from_wire({**DONE, "queue_s": 0.1}).ok


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("run echo", "kernels.run: not a map"),
        ({**REQUEST, "op": "kernels.nope"}, "kernels.run: unsupported op"),
        ({**REQUEST, "v": 2}, "kernels.run: unsupported v '2'"),
        ({**REQUEST, "v": True}, "kernels.run: v is not an integer"),
        ({k: v for k, v in REQUEST.items() if k != "kernel"}, "kernels.run: kernel is missing"),
        ({**REQUEST, "kernel": "Bad Name"}, "kernels.run: kernel is not a kernel name"),
        ({**REQUEST, "kernel": 7}, "kernels.run: kernel is not a string"),
        ({**REQUEST, "scope": "secret"}, "kernels.run: scope is not public, personal, private"),
        ({**REQUEST, "timeout_s": 0}, "kernels.run: timeout_s is not 0-86400 seconds"),
        ({**REQUEST, "timeout_s": float("nan")}, "timeout_s is not 0-86400 seconds"),
        ({**REQUEST, "timeout_s": 1e9}, "timeout_s is not 0-86400 seconds"),
        ({**REQUEST, "timeout_s": True}, "kernels.run: timeout_s is not an integer or a number"),
    ],
)
def test_a_malformed_request_is_refused_in_one_line(body, says):
    with pytest.raises(MalformedMessage) as info:
        RunRequest.from_wire(body)
    assert says in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ProtocolViolation)  # the sender's fault: its connection closes


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([], "kernels.run reply: not a map"),
        ({**DONE, "v": 0}, "kernels.run reply: unsupported v '0'"),
        ({**DONE, "ok": 1}, "kernels.run reply: ok is not a boolean"),
        ({**DONE, "hosts": None}, "kernels.run reply: hosts is missing"),
        ({**DONE, "hosts": [HOST] * 33}, "kernels.run reply: hosts is over 32"),
        ({**DONE, "hosts": ["echo"]}, "kernels.run reply host: not a map"),
        ({**DONE, "hosts": [{**HOST, "pid": -1}]}, "kernels.run reply host: pid is under 0"),
        ({**DONE, "hosts": [{**HOST, "runs": 1.5}]}, "host: runs is not an integer"),
        ({**DONE, "hosts": [{**HOST, "kernel": "A"}]}, "host: kernel is not a kernel name"),
        ({**DONE, "executor": ""}, "kernels.run reply: executor is under 1"),
        ({**DONE, "executor": "x" * 17}, "kernels.run reply: executor is over 16"),
        ({**DONE, "pid": "7"}, "kernels.run reply: pid is not an integer"),
        ({**DONE, "elapsed_s": -1.0}, "kernels.run reply: elapsed_s is not 0-86400 seconds"),
        ({**FAILED, "kind": "oops"}, "kind is not refused, input, kernel, executor"),
        ({**FAILED, "constraint": ""}, "kernels.run reply: constraint is under 1"),
        ({**FAILED, "error": None}, "kernels.run reply: error is missing"),
        ({**FAILED, "error": "e" * 501}, "kernels.run reply: error is over 500"),
    ],
)
def test_a_malformed_reply_is_refused_in_one_line(body, says):
    with pytest.raises(MalformedMessage) as info:
        RunReply.from_wire(body)
    assert says in str(info.value)
    assert "\n" not in str(info.value)

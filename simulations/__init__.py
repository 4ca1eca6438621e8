"""Simulations: the real peer code on the memory network in virtual time, with device models,
network models and faults, deterministic from one seed. ``swarm simulate`` is the front end."""

from ._faults import KINDS, Fault, play, random_schedule
from ._harness import Result, Run, Scenario
from ._invariants import Invariants, Violation
from ._models import DeviceModel, DeviceProfile, LinkModel, Models, load_models, parse_models
from ._placement import policy_table
from ._plots import write_outputs
from ._scenarios import SCENARIOS, simulate
from ._world import EPOCH, DeviceSpec, SimDevice, World, deterministic_trio

__all__ = [
    "EPOCH",
    "KINDS",
    "SCENARIOS",
    "DeviceModel",
    "DeviceProfile",
    "DeviceSpec",
    "Fault",
    "Invariants",
    "LinkModel",
    "Models",
    "Result",
    "Run",
    "Scenario",
    "SimDevice",
    "Violation",
    "World",
    "deterministic_trio",
    "load_models",
    "parse_models",
    "play",
    "policy_table",
    "random_schedule",
    "simulate",
    "write_outputs",
]

"""The ``swarm`` command: on top of every layer, imported by none.

A command imports only what it runs: building the parser loads the argument helpers and the
command tables, and each command's handler loads its own layer when it runs.
"""

from ._main import main

__all__ = ["main"]

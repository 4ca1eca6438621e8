"""swarm: a peer-to-peer agent swarm across one person's own devices."""

__version__ = "0.1.0"

"""homeswarm: a peer-to-peer agent swarm across one person's own devices.

One import root for the whole project. Each top-level folder of the repository is one layer,
imported as ``homeswarm.<folder>`` (the entries here are links to those folders):

    homeswarm.transports   bytes between peers (libp2p, the memory network), discovery
    homeswarm.vault        the encrypted CRDT vault
    homeswarm.kernels      the micro-kernel API and the built-in kernels
    homeswarm.placement    where a kernel runs: policy and executors
    homeswarm.swarm        the peer: identity, membership, daemon, services
    homeswarm.simulations  real peers on a simulated network in virtual time
    homeswarm.cli          the `swarm` command, on top of everything

Importing this package imports nothing else, so ``swarm --help`` stays fast.
"""

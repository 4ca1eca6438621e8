"""``python -m homeswarm.cli``: the ``swarm`` command."""

import sys

from ._main import main

sys.exit(main())

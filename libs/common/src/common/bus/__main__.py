"""``python -m common.bus list|replay``: the operator's dead-letter tool (``make dead-letters``).

A package ``__main__`` rather than ``python -m common.bus.deadletters``: that module is
imported by the package itself, and running an already-imported module as a script is
what Python warns about.
"""

import sys

from common.bus.deadletters import main

sys.exit(main())

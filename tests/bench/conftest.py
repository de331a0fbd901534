"""The bench runs from the repository's root (``python -m bench.bench``); its tests import it
from there too."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

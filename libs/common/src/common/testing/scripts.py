"""Import one of the repository's ``scripts/*.py`` in a test.

The scripts are run as files (``python scripts/tools.py``), not installed as a package, so a
test loads them by path. The module is registered in ``sys.modules`` because dataclasses look
their own module up there, and its folder is put on the path because some scripts import
their neighbours (``asyncapi_compat`` imports ``release``).
"""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_script(path: Path, module_name: str) -> ModuleType:
    """The script at ``path``, imported as ``module_name``."""
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module

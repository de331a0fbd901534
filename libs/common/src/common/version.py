"""The release this process runs, read once from the installed ``common`` distribution.

One source of truth: ``libs/common/pyproject.toml`` holds the version (``make release`` bumps
it); ``importlib.metadata`` reads it from the editable install in .venv and from the wheel in
the images alike. It shows in ``/readyz``, the workers' ``/healthz`` and the ``build_info``
metric, so an operator (or the upgrade drill) sees which release answers.
"""

from importlib.metadata import version

from prometheus_client import Info

VERSION = version("common")

BUILD_INFO = Info("build", "The release this process runs (value 1; the labels say which)")


def publish_build_info(service: str) -> None:
    """Set ``build_info{service, version}`` for this process (an API or a worker)."""
    BUILD_INFO.info({"service": service, "version": VERSION})

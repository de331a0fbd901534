"""Errors the stack logged while the benchmark ran: figures from a failing stack mislead.

The services log one JSON object a line (``level``, ``msg``, ``exc``); the benchmark notes
where each process's log ends before the load and reads only what was added after it.
"""

import json
from collections import Counter
from pathlib import Path

ERROR_LEVELS = frozenset({"error", "critical"})


def offsets(log_dir: Path, names: tuple[str, ...]) -> dict[str, int]:
    """Where each process's log ends now."""
    return {name: _size(log_dir / f"{name}.log") for name in names}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _summary(record: dict[str, object]) -> str:
    message = str(record.get("msg", "")).strip()
    exception = str(record.get("exc", "")).strip()
    if exception:
        message += ": " + exception.splitlines()[-1][:160]
    return message


def errors_since(log_dir: Path, start: dict[str, int]) -> dict[str, dict[str, object]]:
    """Per process: how many error lines were logged since ``start``, and the commonest."""
    found: dict[str, dict[str, object]] = {}
    for name, offset in start.items():
        path = log_dir / f"{name}.log"
        if _size(path) < offset:
            offset = 0  # rotated meanwhile
        try:
            with path.open("rb") as log:
                log.seek(offset)
                lines = log.read().splitlines()
        except OSError:
            continue
        kinds: Counter[str] = Counter()
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and str(record.get("level", "")).lower() in ERROR_LEVELS:
                kinds[_summary(record)] += 1
        if kinds:
            found[name] = {"count": sum(kinds.values()), "top": kinds.most_common(3)}
    return found

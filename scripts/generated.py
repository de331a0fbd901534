"""Documents generated from the code (`make events`, `make settings-doc`), and the staleness
check `make lint` runs on each."""

from pathlib import Path

from common.contracts import ALL_MESSAGES


def write_or_check(
    path: Path, text: str, argv: list[str], *, remedy: str = "make events", summary: str = ""
) -> int:
    """Write ``text`` to ``path``; with ``--check`` in ``argv``, only say whether it is stale."""
    if "--check" in argv:
        if not path.exists() or path.read_text() != text:
            print(f"{path} is stale: run `{remedy}`")
            return 1
        print(f"{path} is up to date")
        return 0
    path.write_text(text)
    print(f"wrote {path} ({summary or f'{len(ALL_MESSAGES)} message types'})")
    return 0

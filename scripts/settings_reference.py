"""Write docs/settings.md, the settings reference, from the settings classes themselves.

Every setting is an environment variable ``<PREFIX><FIELD>`` read by pydantic-settings; a
setting in a group (a nested model, ``settings.bus.block_ms``) is ``<PREFIX><GROUP>_<FIELD>``
(``ORDERS_BUS_BLOCK_MS``: common.settings explains how). The reference lists, per class, each
setting's variable, where the code reads it, its type, default and the comment written next
to it in the source (the comment block right above the field, or on its line), so the
reference cannot drift from the code: ``make lint`` runs this with ``--check``.

    python scripts/settings_reference.py          # write docs/settings.md
    python scripts/settings_reference.py --check  # exit 1 if docs/settings.md is stale
"""

import ast
import importlib
import inspect
import io
import sys
import textwrap
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generated import write_or_check
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from common.settings import ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "settings.md"
# The services whose settings are documented: module path of each Settings class. A service
# missing from the workspace is skipped (the reference covers what is installed).
SERVICES = ("users", "orders", "notifications", "gateway")


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment written with it in the class's source."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments_by_line: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments_by_line[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    found: dict[str, str] = {}
    run_comment, previous_end = "", -1
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above, trailing = _comments_for(node.lineno, lines, comments_by_line)
            if above or node.lineno != previous_end + 1:
                run_comment = above  # a comment above a run of fields speaks for the run
            found[node.target.id] = " ".join(part for part in (run_comment, trailing) if part)
            previous_end = node.end_lineno or node.lineno
    return found


def _comments_for(line: int, lines: list[str], comments: dict[int, str]) -> tuple[str, str]:
    """The block of comment-only lines right above ``line``, and the comment on it."""
    above: list[str] = []
    previous = line - 1
    while previous >= 1 and lines[previous - 1].lstrip().startswith("#"):
        above.insert(0, comments[previous])
        previous -= 1
    trailing = comments.get(line, "")
    if trailing.startswith(("noqa", "type:")):
        trailing = ""
    return " ".join(above), trailing


def describe_default(field: FieldInfo, group_default: Any = PydanticUndefined) -> str:
    """The field's default; in a group, the group default's value if it sets this field."""
    default = field.default if group_default is PydanticUndefined else group_default
    if group_default is PydanticUndefined and field.default_factory is not None:
        return "(computed)"
    if default is PydanticUndefined:
        return "(required)"
    if default == "":
        return '""'
    return f"`{default!r}`"


def type_name(field: FieldInfo) -> str:
    annotation = field.annotation
    name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
    return f"`{name}`"


@dataclass(frozen=True)
class Setting:
    """One environment variable: a field, or a field of a group (a nested model)."""

    path: str  # where the code reads it: "log_level", "bus.block_ms"
    field: FieldInfo
    comment: str
    group_default: Any = PydanticUndefined  # the group's default's value, when it sets one

    @property
    def variable(self) -> str:
        """The variable after the prefix: the path's dots become underscores."""
        return self.path.replace(".", "_").upper()

    @property
    def default(self) -> str:
        return describe_default(self.field, self.group_default)


def class_comments(cls: type[BaseModel]) -> dict[str, str]:
    """Field name -> comment, over the class and the models it extends."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if (
            isinstance(klass, type)
            and issubclass(klass, BaseModel)
            and klass not in (BaseModel, BaseSettings)
        ):
            comments.update({k: v for k, v in field_comments(klass).items() if v})
    return comments


def group_model(field: FieldInfo) -> type[BaseModel] | None:
    """The nested model of a group field; None for a plain field."""
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def settings_of(cls: type[BaseSettings]) -> dict[str, Setting]:
    """Every setting of a class, by path, in the order of the class's fields."""
    comments = class_comments(cls)
    found: dict[str, Setting] = {}
    for name, field in cls.model_fields.items():
        group = group_model(field)
        if group is None:
            found[name] = Setting(name, field, comments.get(name, ""))
            continue
        group_comments = class_comments(group)
        default = field.default if isinstance(field.default, BaseModel) else None
        for sub, sub_field in group.model_fields.items():
            value = getattr(default, sub) if default and sub in default.model_fields_set else None
            found[f"{name}.{sub}"] = Setting(
                f"{name}.{sub}",
                sub_field,
                group_comments.get(sub, ""),
                PydanticUndefined if value is None else value,
            )
    return found


def settings_table(prefix: str, settings: list[Setting]) -> list[str]:
    rows = [
        "| variable | in the code | type | default | what it is for |",
        "|---|---|---|---|---|",
    ]
    for setting in settings:
        what = setting.comment.replace("|", "\\|")
        rows.append(
            f"| `{prefix}{setting.variable}` | `{setting.path}` | {type_name(setting.field)} "
            f"| {setting.default} | {what} |"
        )
    return rows


def service_classes() -> list[tuple[str, type[ServiceSettings]]]:
    found = []
    for service in SERVICES:
        try:
            module = importlib.import_module(f"{service}.settings")
        except ModuleNotFoundError:
            continue
        found.append((service, module.Settings))
    return found


def render() -> str:
    common = settings_of(ServiceSettings)
    out = [
        "# Settings reference",
        "",
        "<!-- Generated by scripts/settings_reference.py from the settings classes; "
        "`make settings-doc` rewrites it, `make lint` checks it. -->",
        "",
        "Every setting is an environment variable read at start-up (pydantic-settings; a "
        "`.env` file in the working directory is read too). Each service has its own prefix, "
        "so one shell or one ConfigMap holds all of them. Secrets come only from the "
        "environment (a Kubernetes Secret; `make up` generates local ones into `.run/`).",
        "",
        "Settings are grouped per concern (common.settings): the code reads "
        "`<PREFIX>BUS_BLOCK_MS` as `settings.bus.block_ms`, the group `bus` and its field "
        "`block_ms`. The column *in the code* names the attribute under `settings`.",
        "",
    ]
    services = service_classes()
    for service, cls in services:
        prefix = str(cls.model_config.get("env_prefix", ""))
        settings = settings_of(cls)
        own = [setting for path, setting in settings.items() if path not in common]
        overridden = [
            setting
            for path, setting in settings.items()
            if path in common and setting.default != common[path].default
        ]
        out += [f"## {service} (`{prefix}`)", ""]
        if overridden:
            out += [
                "Shared settings whose default differs for this service: "
                + ", ".join(
                    f"`{prefix}{setting.variable}` = {setting.default}" for setting in overridden
                )
                + ".",
                "",
            ]
        if own:
            out += [*settings_table(prefix, own), ""]
    prefixes = ", ".join(
        f"`{cls.model_config.get('env_prefix', '')}`" for _, cls in services if _ != "gateway"
    )
    out += [
        "## Shared by every service (`common.settings.ServiceSettings`)",
        "",
        f"Each service reads these under its own prefix ({prefixes}); the table shows "
        "`<PREFIX>` where that prefix goes.",
        "",
        *settings_table("<PREFIX>", list(common.values())),
        "",
    ]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    text = render()
    variables = text.count("\n| `")
    return write_or_check(
        TARGET, text, argv, remedy="make settings-doc", summary=f"{variables} settings"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Render ``docs/configuration.md`` from the configuration dataclasses.

Each field's documentation is the string literal that follows it in the class body.
``python -m control.confdoc > docs/configuration.md``; a test keeps the file current.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from typing import Any

from control.config import Config


def _field_docs(cls: type) -> dict[str, str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, nxt in zip(body, [*body[1:], None], strict=True):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default).replace("'", '"')
    if f.default_factory is not dataclasses.MISSING:
        return repr(f.default_factory()).replace("'", '"')
    return "(required)"


def render() -> str:
    out = [
        "# Configuration",
        "",
        "Generated from the dataclasses by `python -m control.confdoc`; do not edit by hand.",
        "",
        "Sources, later wins: defaults, the TOML file given with `--config` (one `[section]` per",
        "table below), environment variables `BERRYLIVE_<SECTION>_<FIELD>`, command-line flags.",
        "Aliases: `BERRYLIVE_SECRET` = `server.secret`, `REDIS_URL` = `redis.url`,",
        "`DATABASE_URL` = `database.url`. Unknown keys are an error.",
        "",
    ]
    for section in dataclasses.fields(Config):
        factory: Any = section.default_factory
        cls = type(factory())
        docs = _field_docs(cls)
        out += [
            f"## [{section.name}]",
            "",
            "| key | default | env | meaning |",
            "|---|---|---|---|",
        ]
        for f in dataclasses.fields(cls):
            env = f"BERRYLIVE_{section.name.upper()}_{f.name.upper()}"
            doc = docs.get(f.name, "").replace("|", "\\|")
            out.append(f"| `{f.name}` | `{_default(f)}` | `{env}` | {doc} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")

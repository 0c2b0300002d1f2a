"""mkdocs hooks: the API page lists graft's public names as the package itself declares them.

``docs/api.md`` holds the marker ``<!-- graft-public-api -->``; it is replaced by one mkdocstrings block
per name in ``graft.__all__``, grouped by the module that defines it (read from the object), so the
reference follows refactors without anyone editing the page.
"""

from __future__ import annotations

import importlib
from collections import defaultdict

MARKER = "<!-- graft-public-api -->"


def public_api() -> str:
    graft = importlib.import_module("graft")
    by_module: dict[str, list[str]] = defaultdict(list)
    for name in sorted(graft.__all__):
        value = getattr(graft, name)
        module = getattr(value, "__module__", None)
        qualname = getattr(value, "__qualname__", None)
        if not (module and qualname and callable(value)) or not module.startswith("graft"):
            continue  # a table (CLASSICAL_HEADS, ...): shown with the module that defines it
        is_config = hasattr(value, "validate") and hasattr(value, "PATHS")
        by_module[module].append(f"{module}.{qualname}" + (f"\n\n{config_fields(value)}" if is_config else ""))
    blocks = []
    for module in sorted(by_module):
        blocks.append(f"## `{module}`\n")
        blocks.extend(f"::: {path}\n" for path in by_module[module])
    return "\n".join(blocks)


def config_fields(config) -> str:
    """A Config's fields as a table: the Parameters section graft.config.with_parameters_section
    adds to its docstring at import (griffe reads the source's docstring, which lacks it)."""
    from dataclasses import MISSING, fields

    rows = ["| Parameter | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for f in fields(config):
        if f.default is not MISSING:
            default = f"`{f.default!r}`"
        else:
            default = f"`{f.default_factory()!r}`" if f.default_factory is not MISSING else "required"
        cells = [f"`{f.name}`", f"`{f.type}`", default, f.metadata.get("help") or ""]
        cells[3] = cells[3].replace("|", "\\|")  # a code span keeps its own pipes
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, public_api())
    return markdown

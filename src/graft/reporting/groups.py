"""A self-contained page of image groups: each group a heading, a note and thumbnails with a
caption, and optionally its doubtful images apart (``graft cluster``'s clusters, most typical
first; ``graft select``'s contact sheet). Thumbnails inline as data URIs, the report's CSS;
the jinja2 template ``templates/groups.html.j2``, autoescaped."""
from __future__ import annotations

import functools
from pathlib import Path

from graft._io.files import write_atomic

MAX_GROUP_THUMBNAILS = 2000  # the page stays a few MB; beyond it images are listed without a picture


@functools.lru_cache(maxsize=1)
def _template():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    environment = Environment(loader=PackageLoader("graft.reporting", "templates"), autoescape=True,
                              undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return environment.get_template("groups.html.j2")


def write_groups_page(path, title: str, summary: list[tuple[str, object]], groups: list[dict]) -> Path:
    """Write the page to ``path``. ``groups``: dicts with ``title``, optional ``note``,
    ``images`` and optional ``doubtful``, each a list of ``(image path, caption)``."""
    from graft.reporting.html import _thumbnail

    budget = [MAX_GROUP_THUMBNAILS]

    def figure(image, caption):
        src = _thumbnail(str(image)) if budget[0] > 0 else None
        budget[0] -= 1
        return {"path": str(image), "src": src, "caption": caption, "filename": Path(image).name}

    shown = [{"title": g["title"], "note": g.get("note", ""),
              "images": [figure(*item) for item in g["images"]],
              "doubtful": [figure(*item) for item in g.get("doubtful", [])]} for g in groups]
    page = _template().render(title=title, summary=summary, groups=shown)
    return write_atomic(path, page + "\n")

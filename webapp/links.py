"""The example images and shareable links (gradio-free).

A link carries a run in the page's URL query, `?example=cat-0000&target=dog&norm=L2&eps=5&steps=100&step_size=0.1`
(plus `model=` for a bundled model or a Hub repo other than the app's, and `revision=`), so a colleague who opens
it sees the same image, target and settings and the run starts by itself. Only the bundled examples can be named
in a link: an uploaded image stays in its session on this server, and a checkpoint folder on the server is never
put in a link. Everything read back from a link is checked like any input; what does not check is left out.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlencode

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "examples"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LINK_FIELDS = ("example", "target", "norm", "eps", "steps", "step_size", "model", "revision")
MAX_FIELD = 200  # characters of one query value read back (a longer one is dropped)


def examples(directory: Path) -> dict[str, Path]:
    """The example images by name (their file stem, e.g. "cat-0000"), sorted."""
    if not directory.is_dir():
        return {}
    return {p.stem: p for p in sorted(directory.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}


def caption(name: str) -> str:
    """An example's caption: its class, from names like "cat-0000" or "cat_2" ("cat")."""
    base = name.rsplit("-", 1)[0] if name.rsplit("-", 1)[-1].isdigit() else name
    return base.rsplit("_", 1)[0] if base.rsplit("_", 1)[-1].isdigit() else base


def file_hash(path: str | Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


class Examples:
    """The bundled examples, and which one an image shown on the page is (by content: the page holds a copy)."""

    def __init__(self, directory: Path):
        self.paths = examples(directory)
        self.names = list(self.paths)
        self._by_hash = {file_hash(p): name for name, p in self.paths.items()}

    def __len__(self) -> int:
        return len(self.paths)

    def strip(self) -> list[str]:
        """The examples the page's strip shows: the first of each class, so one row fits a laptop screen."""
        first: dict[str, str] = {}
        for name in self.names:
            first.setdefault(caption(name), name)
        return list(first.values())

    def gallery(self) -> list[tuple[str, str]]:
        return [(str(self.paths[name]), caption(name)) for name in self.strip()]

    def which(self, path: Any) -> str | None:
        """The example this file is a copy of, or None (an upload)."""
        return self._by_hash.get(file_hash(path)) if isinstance(path, (str, Path)) and path else None


def query(fields: Mapping[str, Any]) -> str:
    """A link's query string ("?example=...&target=..."), fields in LINK_FIELDS order, empty ones left out."""
    items = [(k, str(fields[k])) for k in LINK_FIELDS if fields.get(k) not in (None, "")]
    return "?" + urlencode(items)


def read(params: Mapping[str, Any]) -> dict[str, str]:
    """The link fields of a page's query parameters, as strings; unknown, empty or oversized ones dropped."""
    out = {}
    for k in LINK_FIELDS:
        v = params.get(k)
        if isinstance(v, str) and v.strip() and len(v) <= MAX_FIELD:
            out[k] = v.strip()
    return out

"""Where the bundled data lives (checkpoints, example images, the OOD seed bank), from a checkout and from an
installed copy alike."""

from __future__ import annotations

from pathlib import Path


def _assets_dir() -> Path:
    """assets/ beside dat_core in a checkout or an editable install; dat_explainer/assets in an installed copy
    (pyproject.toml maps the repository's assets/ there, next to explain/, train/ and webapp/)."""
    root = Path(__file__).resolve().parent.parent
    installed = root / "dat_explainer" / "assets"
    return installed if installed.is_dir() else root / "assets"


ASSETS_DIR = _assets_dir()

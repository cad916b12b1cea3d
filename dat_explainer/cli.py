"""Console scripts of the installed distribution (pyproject.toml `[project.scripts]`).

Each puts the folder holding our explain/, train/ and webapp/ first on `sys.path` before importing them, so a
different top-level `train` or `explain` (another distribution's, a stray train.py on PYTHONPATH) can neither
shadow ours in these processes nor be shadowed by ours anywhere else.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def home() -> Path:
    """Where explain/, train/ and webapp/ are: this package's folder in an installed copy, the repository root
    in a checkout or an editable install (there this folder holds only the glue)."""
    return HERE if (HERE / "train" / "__main__.py").is_file() else HERE.parent


def _app_dir() -> Path:
    """Where app.py is: spaces/ in an installed copy, the repository root otherwise."""
    return HERE / "spaces" if (HERE / "spaces" / "app.py").is_file() else HERE.parent


def _first_on_path(*folders: Path) -> None:
    for folder in reversed(folders):
        text = str(folder)
        if text in sys.path:
            sys.path.remove(text)
        sys.path.insert(0, text)


def app(argv: list[str] | None = None) -> int:
    """`dat-app` = `python app.py`."""
    _first_on_path(home(), _app_dir())
    from app import main

    return main(argv)


def explain(argv: list[str] | None = None) -> int:
    """`dat-explain` = `python -m explain`."""
    _first_on_path(home())
    from explain.cli import main

    return main(argv)


def train(argv: list[str] | None = None) -> int:
    """`dat-train` = `python -m train`."""
    _first_on_path(home())
    from train.__main__ import main

    return main(argv)

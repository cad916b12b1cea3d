"""dat-explainer as an installed distribution: the console scripts `dat-app`, `dat-explain`, `dat-train`.

The repository keeps its top-level layout (`python app.py`, `python -m explain`, `python -m train` from the
root). An installed copy puts only two names into site-packages: `dat_core` (the library) and this package,
which holds explain/, train/, webapp/, spaces/app.py and assets/ (pyproject.toml maps them here). The
names `explain`, `train` and `app` belong to other PyPI projects, so they are never installed top-level:
a console script puts this package's folder first on `sys.path` for its own process only (`cli.py`).
"""

from dat_core.version import __version__

__all__ = ["__version__"]

"""Where models come from: the one resolver of a model source, used by the library, the CLIs and the app.

A source is `"default"` (the bundled model under assets/models/), a zoo name (`dat_core.zoo`: its bundled
copy, else its Hub repo at the pinned commit), a local checkpoint directory, or a Hub repo id `owner/name`
(downloaded through `huggingface_hub` into its cache). `resolve_source` checks a source without loading
anything; `locate` finds (or downloads) its directory; `load_model` does both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from .assets import ASSETS_DIR
from .checkpoint import WEIGHTS_NAME, load_checkpoint_dir
from .models import Classifier
from .runtime import resolve_device
from .zoo import ZOO, ZooModel, bundled_copy, weights_sha256

DEFAULT_MODEL_DIR = ASSETS_DIR / "models"
"""Bundled checkpoints; `assets/models/DEFAULT` (one line) names the default, else the first `dat-*` dir."""


def canonical_revision(revision: object) -> str | None:
    """A Hub revision as typed -> None (blank) or the stripped text; ValueError unless it is spelled like a
    branch, tag or commit sha (`dat_core.hub.validate_revision`: nothing is looked up)."""
    if revision is None or not str(revision).strip():
        return None
    from .hub import validate_revision  # lazily: local loads never import huggingface_hub

    return validate_revision(revision)


@dataclass(frozen=True)
class ModelSource:
    """A checked model source: `name` is "default", an absolute checkpoint dir, or a Hub repo id."""

    kind: Literal["bundled", "local", "hub"]
    name: str
    revision: str | None = None

    @property
    def key(self) -> str:
        """Names one model: the Hub looks repo ids up whatever their case and a blank revision is its default branch
        `main`, so `User/Model` and `user/model@main` are one key (the app loaded and kept such twins twice)."""
        if self.kind != "hub":
            return f"{self.name}@{self.revision or ''}"
        return f"{self.name.lower()}@{'' if self.revision == 'main' else self.revision or ''}"


def resolve_source(source: str | Path, revision: str | None = None) -> ModelSource:
    """Check a model source and return it canonical; ValueError says what is wrong (nothing is loaded)."""
    if isinstance(source, Path):
        source = str(source)
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"{source!r} is neither an existing checkpoint folder nor a valid Hub repo id: choose "
                         "'default', a checkpoint folder, or a Hub repo id like owner/name")
    source = source.strip()
    revision = canonical_revision(revision)
    if source == "default":
        if revision:
            raise ValueError("a revision only applies to Hub repo ids, not to the bundled model")
        return ModelSource("bundled", "default")
    if source in ZOO:
        return _zoo_source(ZOO[source], revision)
    path = Path(source).expanduser()
    if path.exists():
        if revision:
            raise ValueError(f"revision={revision!r} only applies to Hub repo ids; {source} is a local path")
        return ModelSource("local", str(path.resolve()))
    if source.startswith(("/", ".", "~")) or "\\" in source:
        raise ValueError(f"checkpoint folder {source} does not exist")
    if "/" not in source:   # no owner: meant as a zoo name
        import difflib
        close = difflib.get_close_matches(source, list(ZOO), n=1)
        raise ValueError(f"{source!r} is no zoo model" + (f" (did you mean {close[0]!r}?)" if close else "")
                         + ", existing checkpoint folder or Hub repo id owner/name; the zoo's names: "
                         "dat_core.list_models(), and 'default' is the bundled model")
    from .hub import repo_id_problem  # lazily: local loads never import huggingface_hub

    problem = repo_id_problem(source)
    if problem:
        raise ValueError(f"{source!r} is neither an existing checkpoint folder nor a valid Hub repo id "
                         f"({problem}; expected owner/name)")
    return ModelSource("hub", source, revision)


def _zoo_source(entry: ZooModel, revision: str | None) -> ModelSource:
    """A zoo name -> its bundled copy (a local dir) when that holds the pinned weights, else its pinned Hub repo."""
    name = entry.name
    if revision:
        raise ValueError(f"{name} is a zoo name pinned to one commit; a revision only applies to Hub repo ids")
    bundled = bundled_copy(entry, DEFAULT_MODEL_DIR)
    if bundled is not None:
        return ModelSource("local", str(bundled.resolve()))
    if entry.repo_id is None:
        raise ValueError(f"zoo model {name} is not bundled with this copy (or its weights differ from the pinned "
                         "ones) and has no Hub copy yet")
    return ModelSource("hub", entry.repo_id, entry.revision)


def locate(source: ModelSource, **hub_options) -> Path:
    """The checkpoint directory of a resolved source (Hub repos are downloaded into the HF cache first;
    `hub_options` go to `dat_core.hub.download`)."""
    if source.kind == "bundled":
        return default_model_dir()
    if source.kind == "local":
        return Path(source.name)
    from .hub import download

    directory = download(source.name, revision=source.revision, **hub_options)
    pinned = [m for m in ZOO.values() if m.repo_id and ModelSource("hub", m.repo_id, m.revision).key == source.key]
    if pinned and weights_sha256(directory / WEIGHTS_NAME) != pinned[0].weights_sha256:
        raise ValueError(f"the weights of zoo model {pinned[0].name} ({source.key}) differ from the pinned sha256")
    return directory


def load_model(source: str | Path = "default", revision: str | None = None,
               device: str | torch.device | None = None, cache_dir: str | Path | None = None,
               endpoint: str | None = None, token: str | bool | None = None,
               local_files_only: bool | None = None) -> Classifier:
    """Load a classifier in eval mode from `"default"`, a local checkpoint dir, or a Hub repo id.

    Hub arguments (`revision`, `cache_dir`, `endpoint`, `token`, `local_files_only`) go to
    `huggingface_hub.snapshot_download`; pin `revision` to a commit sha for reproducibility. `device`: as the CLIs'
    --device (auto | cpu | cuda | cuda:N), checked before anything is read.
    """
    device = resolve_device(device) if device is not None else None
    directory = locate(resolve_source(source, revision), cache_dir=cache_dir, endpoint=endpoint, token=token,
                       local_files_only=local_files_only)
    model = load_checkpoint_dir(directory)
    return model.to(device) if device is not None else model


def default_model_dir(root: Path | None = None) -> Path:
    """The bundled default checkpoint dir under `root` (default: `DEFAULT_MODEL_DIR`)."""
    root = Path(root if root is not None else DEFAULT_MODEL_DIR)
    how = ("pass a checkpoint directory or a Hub repo id instead (load_model('path/to/dir') or "
           "load_model('owner/name'); app.py --model DIR|REPO_ID)")
    marker = root / "DEFAULT"
    if marker.is_file():
        name = marker.read_text(encoding="utf-8").strip()
        if not (root / name).is_dir():
            raise FileNotFoundError(f"{marker} names the default model {name!r}, but {root / name} does not "
                                    f"exist; {how}")
        return root / name
    candidates = sorted(p for p in root.glob("dat-*") if p.is_dir()) if root.is_dir() else []
    if not candidates:
        raise FileNotFoundError(f"no bundled model is available yet (nothing under {root}); {how}")
    return candidates[0]



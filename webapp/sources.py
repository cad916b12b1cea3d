"""Which model sources a visitor may load, and what a visitor reads when one fails (gradio-free).

Bundled models (assets/models/*) and Hub repos are always offered; checkpoint folders on the server only when
the app allows local models (`app.py --allow-local-models`; by default only when it listens on loopback, is not
shared through a public link and does not run on a Space). Nothing a visitor reads holds a server path or a
folder's contents: a checkpoint is loaded under a label ("bundled dat-cifar10-wrn16-2", "Hub repo owner/name",
"the folder you entered"), Hub failures become one sentence each, and `inputs.safe_message` removes any path
left in a message.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from typing import Any

from huggingface_hub import errors as hf_errors

from dat_core.checkpoint import CHECKPOINT_FILES, load_checkpoint_dir
from dat_core.hub import forget, repo_id_problem
from dat_core.loading import DEFAULT_MODEL_DIR, ModelSource, canonical_revision, default_model_dir, locate
from dat_core.models import Classifier

LOG = logging.getLogger(__name__)
ENTERED_FOLDER = "the folder you entered"


def bundled_models(root: Path = DEFAULT_MODEL_DIR) -> dict[str, Path]:
    """The bundled checkpoints by folder name, the default first."""
    found = sorted(p for p in root.glob("*") if (p / "config.json").is_file()) if root.is_dir() else []
    try:
        default = default_model_dir(root)
    except FileNotFoundError:
        default = None
    return {p.name: p for p in sorted(found, key=lambda p: p != default)}


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def local_models_allowed(host: str, share: bool = False) -> bool:
    """The default of `--allow-local-models`: only when the server answers this machine alone (bound to
    loopback, no public share link) and does not run on a Hugging Face Space (SPACE_ID set)."""
    return is_loopback(host) and not share and not os.environ.get("SPACE_ID")


def bundled_source(name: str) -> ModelSource:
    """A bundled model by folder name (as the Model tab lists them); ValueError for any other name."""
    found = bundled_models()
    if name not in found:
        raise ValueError(f"no bundled model has that name; choose one of {', '.join(found) or '(none)'}")
    try:
        if found[name].resolve() == default_model_dir().resolve():
            return ModelSource("bundled", "default")
    except FileNotFoundError:
        pass
    return ModelSource("local", str(found[name].resolve()))


def hub_source(repo_id: str, revision: str | None = None) -> ModelSource:
    """A Hub repo as typed in the Model tab, checked without touching the file system: a repo id that also
    names a folder here ("assets/models") is still a Hub repo. Messages do not repeat what was typed."""
    repo_id = str(repo_id or "").strip()
    problem = repo_id_problem(repo_id)
    if problem:
        raise ValueError(f"that is not a valid Hub repo id ({problem}; expected owner/name)")
    return ModelSource("hub", repo_id, canonical_revision(revision))


def local_source(path: str, allowed: bool) -> ModelSource:
    """A checkpoint folder on the server, when local models are allowed. Messages never repeat the path."""
    if not allowed:
        raise ValueError("loading from folders on this server is turned off here; choose a bundled model or a Hub "
                         "repo (the server's operator can start the app with --allow-local-models)")
    try:
        path_ = Path(str(path).strip()).expanduser()
        if not path_.exists():
            raise ValueError(f"{ENTERED_FOLDER} does not exist on this server")
        return ModelSource("local", str(path_.resolve()))
    except OSError:  # a name too long, a loop of links, no permission
        raise ValueError(f"{ENTERED_FOLDER} cannot be read on this server") from None


def label(source: ModelSource, directory: Path | None = None) -> str:
    """How the app names a model to visitors: never by its server path."""
    if source.kind == "hub":
        return f"Hub repo {source.name}" + (f" @ {source.revision}" if source.revision else "")
    where = Path(directory or source.name)
    if source.kind == "bundled":
        return f"bundled default ({where.name})"
    if where.parent.resolve() == DEFAULT_MODEL_DIR.resolve():
        return f"bundled {where.name}"
    return f"folder {where.name}"


def load(source: ModelSource, *, visitor: bool = True, **hub_options: Any) -> tuple[Classifier, Path]:
    """Locate (download) and load a checkpoint; every failure is a ValueError a visitor may read.

    A checkpoint comes from anyone, so any exception while reading it is its fault, not a bug of ours: the
    traceback goes to the server log, the visitor reads one sentence. `visitor=False` (the operator's
    `--model DIR`) names a folder by its path; `hub_options` go to `dat_core.hub.download`.
    """
    name = label(source)
    if source.kind == "hub":
        try:
            directory = locate(source, **hub_options)
        except (OSError, ValueError) as e:
            raise ValueError(hub_failure(source, e)) from e
    else:
        directory = locate(source)
    errors_label = name
    if source.kind == "local" and not name.startswith("bundled"):
        errors_label = ENTERED_FOLDER if visitor else str(directory)
    try:
        model = load_checkpoint_dir(directory, label=errors_label)
        return model, directory
    except (OSError, ValueError) as e:
        refused(source, directory)
        said = str(e)
        for name in CHECKPOINT_FILES:   # "the folder you entered/config.json" -> "the config.json in the folder ..."
            said = said.replace(f"{ENTERED_FOLDER}/{name}", f"the {name} in {ENTERED_FOLDER}")
        raise ValueError(said) from e
    except Exception as e:  # noqa: BLE001 (the boundary to untrusted files; see the docstring)
        refused(source, directory)
        LOG.exception("loading %s failed", name)
        raise ValueError(f"{name} could not be loaded: it is not a valid checkpoint ({type(e).__name__})") from e


def refused(source: ModelSource, directory: Path) -> None:
    """A Hub checkpoint that failed to load leaves the server's cache (`dat_core.hub.forget`): kept, every repo of
    junk weights a visitor names would stay on the disk."""
    if source.kind == "hub":
        forget(directory)


def hub_failure(source: ModelSource, error: BaseException) -> str:
    """One sentence for a failed Hub download, without the server's cache path or endpoint."""
    name = label(source)
    cause = error.__cause__ or error
    if isinstance(cause, hf_errors.RevisionNotFoundError):
        return f"{name} was not found: the repo has no such revision (a branch, tag or commit sha)"
    if isinstance(cause, hf_errors.RepositoryNotFoundError):
        return f"{name} was not found on the Hub (or it is private or gated)"
    if isinstance(cause, hf_errors.LocalEntryNotFoundError):
        return f"{name} could not be downloaded: this server cannot reach the Hub and has no copy of it"
    if isinstance(error, FileNotFoundError):
        return f"{name} is not a model checkpoint: it needs {' + '.join(CHECKPOINT_FILES)}"
    if isinstance(error, ValueError):
        return f"{name} cannot be loaded: {error}"
    return f"{name} could not be downloaded: the Hub answered with an error"


# ---------------------------------------------------------------- models in shareable links

HUB_PREFIX = "hf:"


def link_fields(source: ModelSource | None, is_default: bool) -> dict[str, str]:
    """How a link names a model: nothing for the app's own, a bundled model by folder name, a Hub repo as
    "hf:owner/name" (+ revision). A folder on the server is never put in a link (the link then opens on the
    app's model)."""
    if is_default or source is None:
        return {}
    if source.kind == "hub":
        return {"model": HUB_PREFIX + source.name, **({"revision": source.revision} if source.revision else {})}
    if source.kind == "bundled":
        return {"model": default_model_dir().name}
    name = Path(source.name).name
    return {"model": name} if bundled_models().get(name, Path()).resolve() == Path(source.name) else {}


def link_source(model: str, revision: str | None = None) -> ModelSource:
    """The model a link names (`link_fields`), checked like the Model tab's choice; ValueError otherwise."""
    if model.startswith(HUB_PREFIX):
        return hub_source(model[len(HUB_PREFIX):], revision)
    return bundled_source(model)

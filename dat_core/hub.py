"""Hugging Face Hub: download a checkpoint dir into the HF cache, push one, validate repo ids.

Downloads go through `huggingface_hub.snapshot_download`, so the standard cache, revision pinning,
`HF_HUB_OFFLINE`, `HF_ENDPOINT` and `HF_TOKEN` all behave as in any Hub library. Client errors are
re-raised with one clear sentence (the original stays as `__cause__`):
not found (repo, revision, file, or offline and not cached) -> FileNotFoundError; other Hub or
network failures -> OSError / ConnectionError.

The Hub looks repo ids up whatever their case, but the cache names a repo's folder as it was typed: a repo is
cached under the spelling the cache already holds, else the Hub's own, so `User/Model` and `user/model` are one
download. The checkpoints cached are bounded in total (`hub_cache.cache_cap`, $DAT_HUB_CACHE_GB).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi, constants, snapshot_download
from huggingface_hub import errors as hf_errors
from huggingface_hub.file_download import repo_folder_name

from .checkpoint import (
    CARD_NAME,
    CHECKPOINT_FILES,
    CONFIG_NAME,
    MAX_CARD_BYTES,
    MAX_CONFIG_BYTES,
    WEIGHTS_NAME,
    load_checkpoint_dir,
    max_weights_bytes,
    read_config,
)
from .files import replacing
from .hub_cache import HUB_FILES, cache_cap, cached_spelling, missing_bytes, reserve, touch
from .models.config import MAX_PARAMETERS
from .zoo import is_commit_sha

MAX_DOWNLOAD_BYTES = {CONFIG_NAME: MAX_CONFIG_BYTES, CARD_NAME: MAX_CARD_BYTES,
                      WEIGHTS_NAME: 8 * MAX_PARAMETERS + (64 << 20)}
"""The largest file of each name that is downloaded: what loading would accept (fp64 weights of the largest model
we load, plus a header), checked against the sizes the Hub lists before anything is fetched."""

_REMOTE_ENTRY_NOT_FOUND = getattr(hf_errors, "RemoteEntryNotFoundError", hf_errors.EntryNotFoundError)

_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"{_PART}/{_PART}")
MAX_REPO_ID_LENGTH = 96
_REF_PART = r"[A-Za-z0-9_][A-Za-z0-9_.+@-]*"
_REVISION = re.compile(rf"{_REF_PART}(?:/{_REF_PART})*")
MAX_REVISION_LENGTH = 200


# ---------------------------------------------------------------- repo ids

def repo_id_problem(repo_id: object) -> str | None:
    """Why `repo_id` is not a valid `owner/name` Hub id (Hub naming rules), or None if it is."""
    if not isinstance(repo_id, str):
        return f"expected a string, got {type(repo_id).__name__}"
    if repo_id.count("/") != 1:
        return "it needs exactly one '/' between owner and name"
    if len(repo_id) > MAX_REPO_ID_LENGTH:
        return f"it is longer than {MAX_REPO_ID_LENGTH} characters"
    if "--" in repo_id or ".." in repo_id:
        return "'--' and '..' are not allowed"
    if not _REPO_ID.fullmatch(repo_id):
        return ("owner and name may only use letters, digits, '-', '_' and '.', and must start and end "
                "with a letter, digit or '_'")
    return None


def is_repo_id(repo_id: object) -> bool:
    return repo_id_problem(repo_id) is None


def validate_repo_id(repo_id: object) -> str:
    """Return `repo_id` if it is a valid `owner/name` Hub id, else raise ValueError saying why."""
    problem = repo_id_problem(repo_id)
    if problem:
        raise ValueError(f"invalid Hub repo id {repo_id!r}: {problem} (expected 'owner/name')")
    return repo_id


def validate_revision(revision: object) -> str | None:
    """None (blank: the default branch) or the stripped revision when it is spelled like a git branch, tag or
    commit sha (ASCII letters, digits and `_ . - + @ /` under `git check-ref-format`'s rules: no absolute path,
    empty or dot-led part, '..', '@{' or '.lock'); else a ValueError that does not repeat it. huggingface_hub
    joins a revision to its cache folder when the Hub cannot answer, so "/dev/zero" would be read there."""
    text = str(revision).strip() if revision is not None else ""
    if not text:
        return None
    parts = text.split("/")
    if (len(text) > MAX_REVISION_LENGTH or not _REVISION.fullmatch(text) or ".." in text or "@{" in text
            or text.endswith(".") or any(p.endswith(".lock") for p in parts)):
        raise ValueError("that revision is not a branch, tag or commit sha")
    return text


# ---------------------------------------------------------------- download

def download(repo_id: str, revision: str | None = None, *, cache_dir: str | Path | None = None,
             endpoint: str | None = None, token: str | bool | None = None,
             local_files_only: bool | None = None, force_download: bool = False,
             max_cache_bytes: int | None = None) -> Path:
    """Download (or find in the HF cache) a checkpoint repo; returns the local snapshot dir.

    Only config.json, model.safetensors and README.md are fetched. `revision` is a branch, tag or
    commit sha (pin the sha for reproducibility); with `local_files_only=True` or `HF_HUB_OFFLINE=1`
    only the cache is used. `max_cache_bytes` bounds the checkpoints cached in all (None: `cache_cap()`).
    """
    validate_repo_id(repo_id)
    revision = validate_revision(revision)
    where = f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    hub_url = endpoint or constants.ENDPOINT
    local_only = bool(local_files_only or constants.HF_HUB_OFFLINE)
    root = Path(cache_dir or constants.HF_HUB_CACHE)
    spelling = cached_spelling(root, repo_id)

    def fetch(at: str | None, files: list[str], cached_only: bool) -> Path:
        return Path(snapshot_download(spelling or repo_id, revision=at, allow_patterns=files, cache_dir=cache_dir,
                                      endpoint=endpoint, token=token, local_files_only=cached_only,
                                      force_download=force_download))

    try:
        listed = None if local_only else _checked_listing(HfApi(endpoint=endpoint, token=token), repo_id, revision)
        if listed is None:   # offline, or the Hub unreachable: the cache only, never a download left unchecked
            path = fetch(revision, HUB_FILES, True)
        else:   # every request pinned to the one commit whose sizes were checked (a branch that moved in between
            commit, sizes, hub_id = listed   # let an unchecked 5 GB file through)
            if spelling is None and hub_id.lower() == repo_id.lower():
                spelling = hub_id
            config = fetch(commit, [CONFIG_NAME], False)
            try:
                _check_weights_size(config, repo_id, sizes.get(WEIGHTS_NAME))
                cap = cache_cap() if max_cache_bytes is None else max_cache_bytes
                release = reserve(root, repo_id, missing_bytes(config, sizes, force_download), cap)
            except ValueError:
                forget(config)   # refused: its config leaves the cache too
                raise
            try:
                path = fetch(commit, HUB_FILES, False)
            finally:
                release()
            if revision != commit:
                _remember_ref(cache_dir, spelling or repo_id, revision or constants.DEFAULT_REVISION, commit)
    except hf_errors.LocalEntryNotFoundError as e:  # offline / unreachable, and not (fully) cached
        offline = os.environ.get("HF_HUB_OFFLINE", "0")
        raise FileNotFoundError(
            f"could not reach the Hub and the model {where} is not in the cache "
            f"{cache_dir or constants.HF_HUB_CACHE} (HF_HUB_OFFLINE={offline}, "
            f"local_files_only={bool(local_files_only)}, endpoint {hub_url}); download it once while online, "
            "or pass a local checkpoint directory") from e
    except hf_errors.RepositoryNotFoundError as e:  # includes gated repos
        raise FileNotFoundError(f"Hub repo {repo_id!r} not found on {hub_url} (or it is private or gated and "
                                "no valid token was given; set HF_TOKEN or pass token=)") from e
    except hf_errors.RevisionNotFoundError as e:
        raise FileNotFoundError(f"revision {revision!r} does not exist in Hub repo {repo_id!r} on {hub_url} "
                                "(expected a branch, a tag or a full commit sha)") from e
    except _REMOTE_ENTRY_NOT_FOUND as e:
        raise FileNotFoundError(f"a file of Hub repo {where} could not be found on {hub_url}: {e}") from e
    except hf_errors.HfHubHTTPError as e:
        raise OSError(f"the Hub at {hub_url} failed to serve {where}: {_answer(e)}") from e
    except _network_errors() as e:   # dropped mid-download (the client turns most of these into the above)
        raise ConnectionError(f"the connection to the Hub at {hub_url} failed while fetching {where}: {e}") from e
    touch(path.parent.parent)
    missing = [name for name in CHECKPOINT_FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"Hub repo {where} (commit {path.name}) has no {' and '.join(missing)}; "
                                f"a checkpoint repo needs {' + '.join(CHECKPOINT_FILES)}")
    return path


RECHECK_TIMEOUT_S = 10.0
"""How long `current_commit` waits for the Hub: the client waits without a limit, and a Hub that took the connection
and never answered held a Load-model press on a model that was loaded already."""


def current_commit(repo_id: str, revision: str | None = None, *, endpoint: str | None = None,
                   token: str | bool | None = None, local_files_only: bool | None = None, **_: object) -> str | None:
    """The commit `revision` (a branch or tag; None: the default branch; a 40-hex sha names itself, unasked) names on
    the Hub now, or None when that cannot be told (offline, unreachable, or the Hub answers with an error): one API
    call, nothing downloaded. Takes `download`'s keyword arguments (a cache_dir is not needed here)."""
    if is_commit_sha(revision):   # names itself: nothing to ask
        return revision
    if local_files_only or constants.HF_HUB_OFFLINE:
        return None
    try:
        return HfApi(endpoint=endpoint, token=token).repo_info(repo_id, revision=validate_revision(revision),
                                                               timeout=RECHECK_TIMEOUT_S).sha
    except (hf_errors.HfHubHTTPError, *_network_errors()):
        return None


def _checked_listing(api: HfApi, repo_id: str, revision: str | None) -> tuple[str, dict[str, int], str] | None:
    """The commit `revision` names now, the sizes it lists for the files we fetch, once each is within
    `MAX_DOWNLOAD_BYTES` (ValueError otherwise), and the repo id as the Hub spells it; None when the Hub cannot be
    reached."""
    try:
        info = api.repo_info(repo_id, revision=revision)
        entries = list(api.list_repo_tree(repo_id, revision=info.sha))
    except _network_errors():
        return None
    sizes = {}
    for entry in entries:
        size, cap = getattr(entry, "size", None), MAX_DOWNLOAD_BYTES.get(entry.path)
        if cap is not None and isinstance(size, int) and size > cap:
            raise ValueError(f"{entry.path} is larger than {cap >> 20} MB ({size >> 20} MB): more than a checkpoint "
                             "we load holds, so it is not downloaded")
        if cap is not None and isinstance(size, int):
            sizes[entry.path] = size
    hub_id = info.id if isinstance(info.id, str) and is_repo_id(info.id) else repo_id
    return info.sha, sizes, hub_id


def _check_weights_size(snapshot: Path, repo_id: str, size: int | None) -> None:
    """ValueError when the listed weights are larger than the model its config.json (fetched alone first) describes
    can be: a config of 78,000 parameters let 3 GB of junk be downloaded."""
    if size is None or not (snapshot / CONFIG_NAME).is_file():
        return   # nothing listed, or no config: `download` says what is missing before any weights are read
    config = read_config(snapshot / CONFIG_NAME, label=f"Hub repo {repo_id} ({CONFIG_NAME})")
    cap = max_weights_bytes(config)
    if size > cap:
        raise ValueError(f"{WEIGHTS_NAME} of Hub repo {repo_id} is {size / 2**20:.1f} MB, more than a "
                         f"{config['arch']} checkpoint can be ({cap / 2**20:.1f} MB), so it is not downloaded")


def forget(snapshot: str | Path) -> None:
    """Remove a downloaded snapshot and the files only it holds from the HF cache (huggingface_hub's own
    `delete_revisions`): a checkpoint a public app refused must not stay on its disk, or a visitor naming repo after
    repo of junk weights would fill it. Nothing when `snapshot` is not a cached snapshot."""
    from huggingface_hub import scan_cache_dir

    snapshot = Path(snapshot)
    if snapshot.parent.name != "snapshots":
        return
    try:
        scan_cache_dir(snapshot.parent.parent.parent).delete_revisions(snapshot.name).execute()
    except (OSError, ValueError, hf_errors.CacheNotFound):
        pass   # not a cache, or already gone: nothing to free


def _remember_ref(cache_dir: str | Path | None, repo_id: str, revision: str, commit: str) -> None:
    """Point the cache's refs/<revision> at `commit`, as `snapshot_download` does when given a branch or tag (here it
    was given the commit), so the same revision loads offline later (the cache layout of huggingface_hub's docs)."""
    folder = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    ref = folder / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    with replacing(ref) as tmp:
        tmp.write_text(commit)


# ---------------------------------------------------------------- push

def check_pushable(directory: str | Path) -> dict:
    """The config of checkpoint dir `directory` once it may be published: its files there, its card not a link out
    of it (a README.md linked elsewhere had that file's text published as the card; config and weights linked to a
    cache's blobs must load as this checkpoint, so they publish nothing else), loadable as a download would be."""
    directory = Path(directory)
    missing = [name for name in CHECKPOINT_FILES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"cannot push {directory}: it is missing {' and '.join(missing)}")
    card = directory / CARD_NAME
    try:
        outside = card.is_symlink() and not card.resolve(strict=False).is_relative_to(directory.resolve())
    except (OSError, RuntimeError):   # a loop of links
        outside = True
    if outside:
        raise ValueError(f"cannot push {directory}: {CARD_NAME} is a link to a file outside the folder (push uploads "
                         "the folder's own card: copy it in)")
    try:
        return load_checkpoint_dir(directory).config
    except ValueError as e:
        raise ValueError(f"cannot push {directory}: {e}") from None


def push(directory: str | Path, repo_id: str, revision: str | None = None, *, token: str | bool | None = None,
         endpoint: str | None = None, private: bool = False,
         commit_message: str = "Upload DAT checkpoint") -> CommitInfo:
    """Upload a checkpoint dir (`check_pushable`) to a Hub model repo, creating it (and the branch `revision`, when
    not main) if needed. Returns the `CommitInfo`: a str (the commit url) with `.oid` and `.commit_url`."""
    validate_repo_id(repo_id)
    revision = validate_revision(revision)
    check_pushable(directory)
    hub_url = endpoint or constants.ENDPOINT
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != constants.DEFAULT_REVISION:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.upload_folder(folder_path=directory, repo_id=repo_id, revision=revision,
                                 commit_message=commit_message, allow_patterns=HUB_FILES)
    except hf_errors.HfHubHTTPError as e:
        hint = ("; pushing needs a token that may write there (token=, --token, HF_TOKEN or `hf auth login`)"
                if getattr(e.response, "status_code", None) in (401, 403) else "")
        raise OSError(f"pushing {directory} to Hub repo {repo_id!r} on {hub_url} failed: {_answer(e)}{hint}") from e
    except _network_errors() as e:
        raise ConnectionError(f"could not reach the Hub at {hub_url} to push {repo_id!r}: {e}") from e


def _answer(e: hf_errors.HfHubHTTPError) -> str:
    """The Hub's answer in one line: its status and its own message (the client's text ran to several lines, with a
    link to a page on HTTP statuses)."""
    said = " ".join((e.server_message or str(e)).split())[:300]
    status = getattr(e.response, "status_code", None)
    return f"the Hub answered {status} {getattr(e.response, 'reason_phrase', '')}: {said}" if status else said


def _network_errors() -> tuple[type[BaseException], ...]:
    """Transport-level exceptions of whichever HTTP stack this huggingface_hub uses."""
    errors: list[type[BaseException]] = []
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)

"""The code version: `__version__` and the git commit of this copy, written into every saved config.json and
model card so a checkpoint says which code produced it."""

from __future__ import annotations

import functools
import json
import subprocess
from importlib import metadata
from pathlib import Path

__version__ = "0.1.0"

DISTRIBUTION = "dat-explainer"


@functools.cache
def git_sha() -> str | None:
    """The commit of this copy: `git rev-parse HEAD` in a checkout (with "-dirty" when tracked files differ
    from it), the commit pip recorded for a `pip install git+URL@...` copy, else None."""
    repo = Path(__file__).resolve().parent.parent
    if (repo / ".git").exists():  # a directory in a clone, a file in a worktree
        try:
            sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10, check=True).stdout.strip()
            return sha + ("-dirty" if dirty else "") if sha else None
        except (OSError, subprocess.SubprocessError):
            return None
    try:  # an installed copy: PEP 610 direct_url.json holds the commit of a VCS install
        direct = metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    try:
        return json.loads(direct or "{}").get("vcs_info", {}).get("commit_id")
    except (json.JSONDecodeError, AttributeError):
        return None


def code_version() -> dict[str, str | None]:
    """{"version": __version__, "git_sha": ...}: the provenance stamp of saved checkpoints and cards."""
    return {"version": __version__, "git_sha": git_sha()}

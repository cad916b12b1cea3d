"""The model zoo: named checkpoints pinned to exact bytes, the way timm and RobustBench name models.

`load_model("dat-cifar10-wrn16-2")` resolves a zoo name to its bundled copy when that copy's weights are the
pinned ones (offline, nothing downloaded), else to its Hub repo at the pinned commit sha. A name is
`<training>-<dataset>-<arch>`: what the weights are, not where they live.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")


def is_commit_sha(revision: str | None) -> bool:
    """Whether a Hub revision names one commit for good (a 40-hex sha), not a branch or tag that can move."""
    return isinstance(revision, str) and _COMMIT_SHA.fullmatch(revision) is not None
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ZooModel:
    """One named checkpoint. `weights_sha256` pins model.safetensors (the Hub's LFS oid of that file); a Hub
    copy is pinned by `repo_id` + `revision` (a 40-hex commit sha, never a branch that can move)."""

    name: str
    arch: str
    dataset: str
    training: str
    threat_model: str
    weights_sha256: str
    bundled: bool = False
    repo_id: str | None = None
    revision: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not _SHA256.fullmatch(self.weights_sha256):
            raise ValueError(f"{self.name}: weights_sha256 must be 64 lowercase hex digits")
        if (self.repo_id is None) != (self.revision is None):
            raise ValueError(f"{self.name}: a Hub copy needs both repo_id and a pinned revision")
        if self.revision is not None and not is_commit_sha(self.revision):
            raise ValueError(f"{self.name}: revision must be a 40-hex commit sha, got {self.revision!r}")
        if not self.bundled and self.repo_id is None:
            raise ValueError(f"{self.name}: a zoo model needs a bundled copy or a pinned Hub copy")


ZOO: dict[str, ZooModel] = {m.name: m for m in (
    ZooModel("dat-cifar10-wrn16-2", arch="wrn-16-2", dataset="cifar10", training="DAT (stage 1 + stage 2)",
             threat_model="L2 eps=0.5",
             weights_sha256="5b7df7a2b561765c4bc8a824b31da7f4142f1f972c3027f1f6345cb3c1e969de", bundled=True,
             description="the app's default: a small DAT model trained on a 2-core CPU (assets/models)"),
    ZooModel("standard-cifar10-wrn16-2", arch="wrn-16-2", dataset="cifar10", training="standard (no attack)",
             threat_model="none",
             weights_sha256="cb1cd3eddfaa32d92ac1785931c6e2c8d78095b8302ad3a773b868d0da52bfe3", bundled=True,
             description="the non-robust reference of the 'Robust vs standard' tab (assets/models)"),
)}
"""Published copies get `repo_id` + `revision` here once pushed (`python -m train push` prints the commit)."""


def list_models(pattern: str = "*") -> list[str]:
    """Zoo names matching a shell-style `pattern` (timm.list_models style), sorted."""
    return sorted(name for name in ZOO if fnmatch.fnmatchcase(name, pattern))


def weights_sha256(path: str | Path) -> str:
    """sha256 of a weights file, remembered while the file stays the same file (a server resolves the same zoo name
    again and again). Size and mtime alone are not that: `cp -p`, `rsync -a` and `tar x` give other bytes the old
    mtime, so the inode and its change time (which no user can set) are part of the key."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns,
                                               stat.st_ctime_ns))


@functools.lru_cache(maxsize=64)
def _sha256(path: str, identity: tuple[int, ...]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundled_copy(entry: ZooModel, models_dir: Path) -> Path | None:
    """The bundled checkpoint dir of `entry` if it holds exactly the pinned weights, else None."""
    directory = models_dir / entry.name
    weights = directory / "model.safetensors"
    if entry.bundled and weights.is_file() and weights_sha256(weights) == entry.weights_sha256:
        return directory
    return None

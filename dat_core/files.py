"""Files that appear whole or not at all, even with several writers at once.

DDP ranks, two runs sharing a data cache, or two app workers may write the same file at the same moment: each
writes its own private temporary file beside the target and renames it over the target (atomic on one file
system), so no reader sees half a file and no writer removes another's temporary file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A private temporary path beside `path`: write it inside the block; on success it replaces `path`,
    on any error it is removed and `path` is left as it was."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

"""Class names that ship with the package, one per line in class-index order, and a reader for a user's file.

- `imagenet.txt`: the 1000 ImageNet-1k classes as short, unique labels, e.g. 134 "crane (bird)", 517 "crane
  (machine)": the list Gradio ships (gradio/media_assets/data/imagenet_labels.json, Apache-2.0), one per line.
- `cifar100.txt`: CIFAR-100's 100 fine label names (the dataset's own `fine_label_names`, alphabetical).
- CIFAR-10's live in `dat_core.models.base.CIFAR10_CLASSES`.
"""

from __future__ import annotations

from pathlib import Path

from ..base import CIFAR10_CLASSES

HERE = Path(__file__).resolve().parent
CLASS_NAME_SETS = ("cifar10", "cifar100", "imagenet")
MAX_CLASS_NAMES_BYTES = 2**20


def dataset_class_names(dataset: str) -> list[str]:
    """The class names of a dataset we ship them for (`CLASS_NAME_SETS`)."""
    if dataset == "cifar10":
        return list(CIFAR10_CLASSES)
    if dataset not in CLASS_NAME_SETS:
        raise ValueError(f"no class names ship for {dataset!r}; known: {', '.join(CLASS_NAME_SETS)}")
    return read_class_names(HERE / f"{dataset}.txt")


def read_class_names(path: str | Path) -> list[str]:
    """Class names from a UTF-8 text file, one per line in class-index order (surrounding blank lines ignored)."""
    path = Path(path)
    if path.stat().st_size > MAX_CLASS_NAMES_BYTES:
        raise ValueError(f"{path} is larger than {MAX_CLASS_NAMES_BYTES // 2**20} MB: not a class-name list")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").strip().splitlines()]
    if not lines or "" in lines:
        raise ValueError(f"{path} must hold one non-empty class name per line")
    return lines


def class_names_from(spec: str) -> list[str]:
    """`spec` is a name in `CLASS_NAME_SETS` or the path of a one-name-per-line file."""
    if spec in CLASS_NAME_SETS:
        return dataset_class_names(spec)
    if not Path(spec).is_file():
        raise ValueError(f"class names {spec!r} are neither one of {', '.join(CLASS_NAME_SETS)} nor a file")
    return read_class_names(spec)

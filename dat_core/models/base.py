"""The base of every classifier: normalization inside, `.config` for checkpoints, features + head, and
the stage-2 BatchNorm freeze.

Every model maps [0,1] NCHW images to logits; input normalization lives inside the model as
non-persistent buffers, so state-dict keys match the official checkpoints exactly.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import torch
import torch.nn as nn

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


def default_class_names(num_classes: int) -> list[str]:
    """The class names a config without `class_names` gets: CIFAR-10's for 10 classes, else "0".."K-1"."""
    return list(CIFAR10_CLASSES) if num_classes == 10 else [str(i) for i in range(num_classes)]


MARKUP = re.compile(r"[<>\[\]`\\|@\x00-\x1f\x7f]|://|www\.", re.IGNORECASE)
"""What a class name may not hold: they come with checkpoints from anyone and are shown in the app's Markdown
(HTML, links, images, table cells, web and mail addresses that become links) and written into file names."""


_UNSHOWABLE = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}
"""Unicode categories a name may not use: controls, format characters (bidi overrides make "tac" read as "cat";
zero-width ones make look-alikes), lone surrogates (no UTF-8 file name or JSON reply can hold them), private use
and line breaks. Unassigned code points pass: which are depends on Python's Unicode version (a new emoji would load
on one Python and not another). The zero-width (non-)joiners stay: Persian, Indic scripts and emoji use them."""
_JOINERS = {"\u200c", "\u200d"}


def _unshowable(name: str) -> str | None:
    """The first character of `name` that is not shown as text, or None."""
    return next((c for c in name if c not in _JOINERS and unicodedata.category(c) in _UNSHOWABLE), None)


def check_class_names(names: list[str]) -> list[str]:
    """`names` if every name can name a target and be shown as it is; ValueError says which rule one breaks."""
    seen: set[str] = set()
    for n in names:
        if not isinstance(n, str) or not n.strip() or len(n) > 200:
            raise ValueError(f"class names must be text of 1 to 200 characters, not blank; got {str(n)[:40]!r}")
        if "," in n or n.strip().lower() == "all":   # "--target cat,dog" lists classes, "all" means every class
            raise ValueError(f"class names must hold no comma and not be 'all' (targets are named by them); "
                             f"got {n[:40]!r}")
        if (bad := _unshowable(n)) is not None:
            shown = n[:40].encode("ascii", "backslashreplace").decode()
            raise ValueError(f"class names must be plain visible text (no control, format, bidi or private-use "
                             f"character); got U+{ord(bad):04X} in {shown!r}")
        if MARKUP.search(n):
            raise ValueError("class names must not hold < > [ ] ` \\ | @, control characters or a web address "
                             f"(they are shown as text); got {n[:40]!r}")
        if n.strip().lower() in seen:   # a target is named case-insensitively: the first of two would win silently
            raise ValueError(f"class names must be distinct (ignoring case); {n[:40]!r} appears twice")
        seen.add(n.strip().lower())
    return names


def class_names_of(config: dict[str, Any]) -> list[str]:
    """A model config's class names (the one fallback for configs that lack them)."""
    return list(config.get("class_names") or default_class_names(int(config.get("num_classes", 10))))


class Classifier(nn.Module):
    """Base class. Subclasses define `forward_features` (normalized images -> penultimate features) and
    `head` (features -> logits), keeping the official key names of their family.

    `features(x)` gives the penultimate features of [0,1] images (a fixed feature space for generative
    metrics); `forward(x)` = `head(features(x)) / T` = the logits, where T = `config["temperature"]`
    (absent: 1) is a post-hoc calibration fitted on validation data (`python -m train calibrate`).
    One positive scale cannot change a prediction or the direction of an L2- or Linf-normalized PGD
    step on a logit (METHOD §4); it changes how sure the model says it is, and the energy's scale.
    With `bn_frozen = True`, every BatchNorm stays in eval mode (running statistics fixed) even
    when the model is put in train mode; its affine parameters still receive gradients (METHOD §3.1).
    """

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = dict(config)
        self.bn_frozen = False
        self.register_buffer("mean", torch.tensor(config["mean"]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config["std"]).view(1, -1, 1, 1), persistent=False)

    @property
    def head(self) -> nn.Module:  # the last linear layer, under its family's key name
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # normalized input -> (N, D)
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits((x - self.mean) / self.std)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, D) of [0,1] images."""
        return self.forward_features((x - self.mean) / self.std)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of an already normalized input (divided by the calibration temperature, if any)."""
        out = self.head(self.forward_features(x))
        temperature = self.config.get("temperature")
        return out if temperature is None else out / temperature

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        if self.bn_frozen:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def freeze_bn(self, frozen: bool = True) -> "Classifier":
        """Switch the stage-2 BatchNorm freeze on or off (re-applies the current mode)."""
        self.bn_frozen = frozen
        return self.train(self.training)


def init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)

"""`DATModel`: our classifiers through huggingface_hub's `PyTorchModelHubMixin` (`from_pretrained`,
`save_pretrained`, `push_to_hub`), reading and writing exactly our checkpoint format (`dat_core.checkpoint`).

The mixin lives on a thin wrapper, not on `Classifier`: the checkpoint code builds models, so a mixin on the
model class that called back into it would be an import cycle (models -> checkpoint -> models). The wrapper's
forward is the classifier's; `.classifier` is the plain model `load_model` returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from huggingface_hub import ModelCard, PyTorchModelHubMixin

from .cards import TAGS, build_card
from .checkpoint import load_checkpoint_dir, save_model
from .loading import locate, resolve_source
from .models import Classifier, build_model
from .models.config import validate_model_config


class DATModel(nn.Module, PyTorchModelHubMixin, library_name="dat-explainer", license="mit",
               pipeline_tag="image-classification", tags=[t for t in TAGS if not t.endswith("model_hub_mixin")]):
    """A classifier with the Hub mixin's API. `DATModel(config)` builds a fresh one; `DATModel.wrap(model)`
    wraps a loaded one; `DATModel.from_pretrained(name)` takes a zoo name, a checkpoint dir or a Hub repo id."""

    def __init__(self, config: dict[str, Any], classifier: Classifier | None = None):
        super().__init__()
        self.classifier = classifier if classifier is not None else build_model(**validate_model_config(config))
        self.train(self.classifier.training)  # a wrapped model in eval mode stays in eval mode

    @classmethod
    def wrap(cls, classifier: Classifier) -> "DATModel":
        return cls(classifier.config, classifier)

    @property
    def config(self) -> dict[str, Any]:
        return self.classifier.config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *, force_download: bool = False,
                        token: str | bool | None = None, cache_dir: str | Path | None = None,
                        local_files_only: bool = False, revision: str | None = None,
                        map_location: str | torch.device = "cpu") -> "DATModel":
        """A zoo name (`dat_core.list_models()`), "default", a checkpoint dir or a Hub repo id, loaded through the
        one checked path of `load_model` (`dat_core.loading`). The mixin's own `from_pretrained` is not called: it
        parses config.json whole, unbounded and unchecked, and hands its keys to `__init__` before any hook of ours."""
        return cls._from_pretrained(model_id=pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir,
                                    force_download=force_download, local_files_only=local_files_only, token=token,
                                    map_location=map_location)

    @classmethod
    def _from_pretrained(cls, *, model_id: str | Path, revision: str | None, cache_dir: str | Path | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         map_location: str | torch.device = "cpu") -> "DATModel":
        """Our loader, not the mixin's: only config.json + model.safetensors (+ README.md) are fetched, every
        field is checked before anything is built, and nothing is ever unpickled."""
        directory = locate(resolve_source(model_id, revision), cache_dir=cache_dir, token=token,
                           local_files_only=local_files_only, force_download=force_download)
        return cls.wrap(load_checkpoint_dir(directory).to(map_location))

    def push_to_hub(self, repo_id: str, *, model_card_kwargs: dict[str, Any] | None = None, **kwargs) -> str:
        """The mixin's `push_to_hub`; the card names the repo (and links its numbers to it)."""
        from .hub import validate_repo_id

        validate_repo_id(repo_id)
        return super().push_to_hub(repo_id, model_card_kwargs={"repo_id": repo_id, **(model_card_kwargs or {})},
                                   **kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        save_model(self.classifier, save_directory)

    def generate_model_card(self, metrics: dict[str, Any] | None = None, repo_id: str | None = None,
                            dataset: str = "cifar10", **_: Any) -> ModelCard:
        """Our card (`dat_core.cards`); `save_pretrained(..., model_card_kwargs={"metrics": eval_json})` puts an
        eval report (with AutoAttack) into its model-index."""
        return build_card(self.config, metrics, repo_id=repo_id, dataset=dataset)

"""Model cards: a README.md with Hub YAML metadata (license, tags, datasets, metrics, model-index)."""

from __future__ import annotations

import json
from typing import Any

TAGS = ["adversarial-robustness", "energy-based-model", "image-classification", "dat-explainer",
        "pytorch_model_hub_mixin"]
METRIC_NAMES = {  # eval JSON key -> (model-index type, human name)
    "clean_accuracy": ("accuracy", "Clean accuracy"),
    "robust_accuracy": ("robust_accuracy", "PGD robust accuracy"),
    "robust_strong_accuracy": ("robust_accuracy", "PGD robust accuracy (strong)"),
    "ece": ("ece", "Expected calibration error (15 bins)"),
}


def _yaml_value(v: Any) -> str:
    return json.dumps(v)  # JSON scalars and lists are valid YAML


def render_card(config: dict[str, Any], metrics: dict[str, Any] | None = None, *, repo_id: str | None = None,
                dataset: str = "cifar10", body: str = "") -> str:
    """Card text with YAML front matter; `metrics` is an eval JSON from `python -m train eval`."""
    metrics = metrics or {}
    lines = ["---", "license: mit", "library_name: dat-explainer", "pipeline_tag: image-classification",
             f"tags: {_yaml_value(TAGS)}", f"datasets: {_yaml_value([dataset])}",
             f"metrics: {_yaml_value(sorted({METRIC_NAMES[k][0] for k in metrics if k in METRIC_NAMES}))}"]
    results = [(k, metrics[k]) for k in METRIC_NAMES if isinstance(metrics.get(k), (int, float))]
    if results:
        name = repo_id.split("/")[-1] if repo_id else config.get("arch", "model")
        lines += ["model-index:", f"- name: {_yaml_value(name)}", "  results:", "  - task:",
                  "      type: image-classification", "    dataset:", f"      name: {_yaml_value(dataset)}",
                  f"      type: {_yaml_value(dataset)}", "    metrics:"]
        for key, value in results:
            kind, human = METRIC_NAMES[key]
            lines += [f"    - type: {kind}", f"      name: {_yaml_value(human)}", f"      value: {value:.4f}"]
    lines.append("---")
    title = f"# {repo_id or config.get('arch', 'DAT model')}"
    summary = (f"\n\nA `{config.get('arch')}` classifier ({config.get('num_classes')} classes, "
               f"{config.get('image_size')}px inputs in [0,1]) for DAT Explainer. Load it with "
               f"`dat_core.load_model({_yaml_value(repo_id or 'DIR')})`.\n")
    table = ""
    if results:
        table = "\n| metric | value |\n|---|---|\n" + "".join(
            f"| {METRIC_NAMES[k][1]} | {v:.4f} |\n" for k, v in results)
        if "attack" in metrics:
            table += f"\nAttack: `{json.dumps(metrics['attack'])}`\n"
    return "\n".join(lines) + "\n" + title + summary + table + (f"\n{body.strip()}\n" if body.strip() else "")


def update_card(existing: str | None, config: dict[str, Any], metrics: dict[str, Any] | None = None, *,
                repo_id: str | None = None, dataset: str = "cifar10") -> str:
    """New front matter (and metrics table) for a card, keeping the prose a person wrote below it."""
    fresh = render_card(config, metrics, repo_id=repo_id, dataset=dataset)
    if not existing:
        return fresh
    _, body = split_card(existing)
    front, _ = split_card(fresh)
    return front + "\n" + body


def split_card(text: str) -> tuple[str, str]:
    """(front matter, body) of an existing card; body keeps whatever a person wrote."""
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end != -1:
            return text[: end + 4], text[end + 4:].lstrip("\n")
    return "", text

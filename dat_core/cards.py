"""Model cards: a README.md with Hub YAML metadata, built with huggingface_hub's `ModelCard` / `ModelCardData` /
`EvalResult`, so the Hub renders the model-index (clean, PGD and AutoAttack accuracy with the dataset split,
the attack and where the numbers came from) and validates it like any other card."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .cli_types import eps_text
from .files import read_json
from .version import code_version

TAGS = ["adversarial-robustness", "energy-based-model", "image-classification", "dat-explainer",
        "pytorch_model_hub_mixin", "model_hub_mixin"]
SOURCE = "python -m train eval"
"""Where a card's numbers come from (the model-index `source`); the eval JSON records its own command line."""

METRIC_NAMES = {  # eval JSON key -> (model-index type, human name, the key of its attack settings)
    "clean_accuracy": ("accuracy", "Clean accuracy", None),
    "robust_accuracy": ("robust_accuracy", "PGD robust accuracy", "robust"),
    "robust_strong_accuracy": ("robust_accuracy", "Strong PGD robust accuracy", "robust_strong"),
    "autoattack_accuracy": ("robust_accuracy", "AutoAttack robust accuracy", "autoattack"),
    "ece": ("ece", "Expected calibration error (15 bins)", None),
}


BF16 = " [bf16]"
"""The mark of a number measured under bf16 autocast (`--autocast`), on its model-index name and table row."""

EVAL_REPORT_BYTES = 64 << 20


def read_eval_report(path: str | Path, label: str) -> dict[str, Any]:
    """The report of `python -m train eval --json`, read with a bound and checked where a card takes it from: a
    JSON object, each number the card reports finite, each attack's settings an object with a numeric eps. A
    hand-edited or foreign file fails here in one line naming it `label`, not inside the card code."""
    report = read_json(Path(path), EVAL_REPORT_BYTES, label, "an eval report (`python -m train eval --json`)")
    if not isinstance(report, dict):
        raise ValueError(f"{label} is not an eval report: expected a JSON object, got a {type(report).__name__}")
    problems = [f"{key} is {report[key]!r}, not a finite number" for key in METRIC_NAMES
                if report.get(key) is not None and not _finite(report[key])]
    problems += [f"{attack} is not an object of attack settings with a numeric eps"
                 for _, _, attack in METRIC_NAMES.values() if attack and report.get(attack) is not None
                 and not (isinstance(report[attack], dict) and _finite(report[attack].get("eps", 0)))]
    if not isinstance(report.get("split") or "", str):
        problems.append("split is not text")
    if problems:
        raise ValueError(f"{label} is not a valid eval report: {'; '.join(problems)}")
    return report


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _attack(metrics: dict[str, Any], key: str | None) -> dict[str, Any] | None:
    """The attack settings behind one number, as the model-index metric `args`."""
    settings = metrics.get(key) if key else None
    if not isinstance(settings, dict):
        return None
    if key == "autoattack":  # pyautoattack's report: keep what defines the attack, not its results
        return {"attack": "AutoAttack", **{k: settings[k] for k in ("version", "attacks", "norm", "eps", "seed")
                                          if k in settings}}
    return {"attack": "PGD", **settings}


def _results(metrics: dict[str, Any]) -> list[tuple[str, float]]:
    return [(k, float(metrics[k])) for k in METRIC_NAMES
            if isinstance(metrics.get(k), (int, float)) and not isinstance(metrics.get(k), bool)]


def eval_results(metrics: dict[str, Any], dataset: str = "cifar10", repo_id: str | None = None) -> list[EvalResult]:
    """Model-index entries of an eval JSON (`python -m train eval --json`, with `--autoattack` for AutoAttack):
    one per number, with its dataset split, sample count and attack; the source is the model's own Hub page
    (self-reported numbers) when `repo_id` is known."""
    source = {"source_name": SOURCE, "source_url": f"https://huggingface.co/{repo_id}"} if repo_id else {}
    split = metrics.get("split")
    out = []
    for key, value in _results(metrics):
        kind, human, attack_key = METRIC_NAMES[key]
        args = _attack(metrics, attack_key)
        n = (metrics.get(attack_key) or {}).get("n") if attack_key == "autoattack" else metrics.get("n")
        if isinstance(n, int):
            args = {**(args or {}), "n": n}
        if metrics.get("val_size"):   # held-out images of the split, not the split: the model-index says so too
            args = {**(args or {}), "val_size": metrics["val_size"]}
        bf16 = metrics.get("autocast") is True and attack_key != "autoattack"   # AutoAttack always runs fp32
        if bf16:   # not the fp32 number papers report: the name and the model-index say so
            args = {**(args or {}), "precision": "bf16"}
        threat = f" ({args['norm']} eps={eps_text(args['eps'], args['norm'])})" \
            if args and "norm" in args and "eps" in args else ""
        out.append(EvalResult(task_type="image-classification", task_name="Image Classification",
                              dataset_type=dataset, dataset_name=dataset, dataset_split=split,
                              metric_type=kind, metric_name=human + threat + (BF16 if bf16 else ""),
                              metric_value=round(value, 4),
                              metric_args=args, **source))
    return out


def card_data(config: dict[str, Any], metrics: dict[str, Any] | None = None, *, repo_id: str | None = None,
              dataset: str = "cifar10") -> ModelCardData:
    """The YAML metadata: license, library, tags (sorted, as `update_card` keeps them: a second push of the same card
    changed their order), dataset, metric types and the model-index."""
    results = eval_results(metrics or {}, dataset, repo_id)
    return ModelCardData(
        license="mit", library_name="dat-explainer", pipeline_tag="image-classification", tags=sorted(TAGS),
        datasets=[dataset], metrics=sorted({r.metric_type for r in results}) or None,
        model_name=(repo_id.split("/")[-1] if repo_id else config.get("arch", "model")) if results else None,
        eval_results=results or None)


def build_card(config: dict[str, Any], metrics: dict[str, Any] | None = None, *, repo_id: str | None = None,
               dataset: str = "cifar10", body: str = "") -> ModelCard:
    """A fresh card: metadata, a summary of the model, a metrics table and the code version that wrote it."""
    metrics = metrics or {}
    results = _results(metrics)
    title = f"# {repo_id or config.get('arch', 'DAT model')}"
    summary = (f"\n\nA `{config.get('arch')}` classifier ({config.get('num_classes')} classes, "
               f"{config.get('image_size')}px inputs in [0,1]) for DAT Explainer. Load it with "
               f"`dat_core.load_model({json.dumps(repo_id or 'DIR')})` or "
               f"`dat_core.DATModel.from_pretrained({json.dumps(repo_id or 'DIR')})`.\n")
    table = "\n" + _table(metrics, dataset) if results else ""
    written = config.get("code_version") or code_version()
    provenance = (f"\nWritten by dat-explainer {written.get('version')} (git {written.get('git_sha') or 'unknown'}).\n")
    text = title + summary + table + (f"\n{body.strip()}\n" if body.strip() else "") + provenance
    return _card(card_data(config, metrics, repo_id=repo_id, dataset=dataset), text)


TABLE = re.compile(r"^\| metric[^\n]*\(`" + re.escape(SOURCE) + r"`\) \| value \|\n\|---\|---\|\n(?:\|[^\n]*\|\n)*",
                   re.MULTILINE)
"""The metrics table `build_card` writes into a card's body (rewritten by `update_card`)."""


def _table(metrics: dict[str, Any], dataset: str, kept: list[EvalResult] = ()) -> str:
    """The body's table of a report's numbers; `kept`: model-index results of an earlier report it did not
    measure again, each row saying where it came from."""
    rows = [(r.metric_name, r.metric_value) for r in eval_results(metrics, dataset)]
    for r in kept:
        n = (r.metric_args or {}).get("n")
        where = f"{f'{n} images of ' if isinstance(n, int) else ''}the {r.dataset_split or 'same'} split"
        if isinstance(r.metric_value, (int, float)):
            rows.append((f"{r.metric_name} (an earlier run, on {where})", r.metric_value))
    n = metrics.get("n")   # a --limit subset says so where the numbers are read
    held = (f"the validation carve-out of the {metrics['split']} split (val-size {metrics['val_size']}, seed "
            f"{metrics.get('seed')})" if metrics.get("val_size") else f"the {metrics.get('split')} split")
    split = f" on {f'{n} images of ' if isinstance(n, int) else ''}{held}" if metrics.get("split") else ""
    return (f"| metric{split} (`{SOURCE}`) | value |\n|---|---|\n"
            + "".join(f"| {name} | {value:.4f} |\n" for name, value in rows))


def _measure(result: EvalResult) -> str:
    """What a model-index result measures, whatever the precision it was measured in."""
    return result.metric_name.removesuffix(BF16)


def _card(data: ModelCardData, text: str) -> ModelCard:
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{text}")


def render_card(config: dict[str, Any], metrics: dict[str, Any] | None = None, *, repo_id: str | None = None,
                dataset: str = "cifar10", body: str = "") -> str:
    """Card text with YAML front matter; `metrics` is an eval JSON from `python -m train eval`."""
    return str(build_card(config, metrics, repo_id=repo_id, dataset=dataset, body=body))


def update_card(existing: str | None, config: dict[str, Any], metrics: dict[str, Any] | None = None, *,
                repo_id: str | None = None, dataset: str = "cifar10") -> str:
    """New metadata for a card, keeping the prose a person wrote below it and their own extra YAML keys.
    Without `metrics`, the card's existing model-index stays; with them, its results of numbers the new report
    does not measure (an AutoAttack number, say; a number measured again replaces the old one, in fp32 or bf16)
    stay beside the new ones, and the body's metrics table, where it has the one `build_card` writes, is
    rewritten to match."""
    if not existing:
        return render_card(config, metrics, repo_id=repo_id, dataset=dataset)
    front, body = split_card(existing)
    theirs = ModelCard(existing).data.to_dict() if front else {}
    data = card_data(config, metrics, repo_id=repo_id, dataset=dataset)
    if metrics:
        old = ModelCard(existing).data if front else None
        new = {_measure(r) for r in data.eval_results or []}
        kept = [r for r in (old.eval_results or [] if old else []) if _measure(r) not in new]
        data.eval_results = [*(data.eval_results or []), *kept] or None
        data.metrics = sorted({r.metric_type for r in data.eval_results or []}) or None
        if data.eval_results:
            data.model_name = data.model_name or (old.model_name if old else None) or config.get("arch", "model")
        if data.eval_results and TABLE.search(body):
            body = TABLE.sub(lambda _: _table(metrics, dataset, kept), body, count=1)
    ours = data.to_dict()
    if not metrics:  # nothing new to report: keep what the card says
        ours = {k: v for k, v in ours.items() if k not in ("model-index", "metrics")}
    merged = {**theirs, **ours, "tags": sorted(set(theirs.get("tags") or []) | set(TAGS))}
    return str(_card(ModelCardData(**_from_yaml_keys(merged)), body))


def _from_yaml_keys(data: dict[str, Any]) -> dict[str, Any]:
    """`ModelCardData(**...)` takes `eval_results` + `model_name`, not the YAML's `model-index`."""
    data = dict(data)
    index = data.pop("model-index", None)
    if index:
        from huggingface_hub.repocard_data import model_index_to_eval_results

        data["model_name"], data["eval_results"] = model_index_to_eval_results(index)
    return data


def card_sample_count(text: str | None) -> int | None:
    """The most images any of a card's model-index results was measured on (their `n`), or None."""
    if not text or not text.startswith("---"):
        return None
    counts = [(r.metric_args or {}).get("n") for r in ModelCard(text).data.eval_results or []]
    return max((n for n in counts if isinstance(n, int)), default=None)


def without_metric(existing: str, metric_type: str) -> str:
    """`existing` card without its results of `metric_type`, in the model-index and the body's table: calibrating
    sets a new temperature, so an ECE measured before it is no longer the model's (`push` would publish it)."""
    front, body = split_card(existing)
    try:
        data = ModelCard(existing).data if front else None
    except (yaml.YAMLError, ValueError, TypeError):   # front matter a person broke: theirs to fix, copied as it is
        data = None
    if data is None:
        return existing
    results = data.eval_results or []
    kept = [r for r in results if r.metric_type != metric_type]
    if len(kept) == len(results):
        return existing
    gone = {_measure(r) for r in results} - {_measure(r) for r in kept}
    data.eval_results = kept or None
    data.metrics = sorted({r.metric_type for r in kept}) or None
    rows = re.compile(r"^\| (?:" + "|".join(map(re.escape, gone)) + r")(?: \[bf16\])?(?: \(an earlier run[^|]*)? "
                      r"\|[^\n]*\n", re.MULTILINE)
    return str(_card(data, TABLE.sub(lambda m: rows.sub("", m.group(0)), body, count=1)))


def split_card(text: str) -> tuple[str, str]:
    """(front matter, body) of an existing card; body keeps whatever a person wrote."""
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end != -1:
            return text[: end + 4], text[end + 4:].lstrip("\n")
    return "", text

"""A loaded model in words: the banner, the Model tab's table and card, how typical an energy is.

Kept apart from `state.py` (which holds models, not their descriptions) so both stay short.
"""

from __future__ import annotations

import re

from dat_core.cards import split_card
from dat_core.checkpoint import model_card
from dat_core.evaluation.metrics import energy_percentile
from dat_core.models import count_parameters

from .charts import fmt
from .state import LoadedModel

MAX_CARD_CHARS = 100_000
NO_REFERENCE = "no reference statistics"
"""What a checkpoint without stored in-distribution energy quantiles (`energy_quantiles`) is said to lack."""
STAGES = ("stage1", "stage2")


def _whole(value: object) -> str:
    """A count from a checkpoint's record, or "?" (text there would be Markdown in the app's voice)."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "?"


def banner(loaded: LoadedModel) -> str:
    """One line above the tabs: which model answers, its architecture, classes and input size."""
    names = loaded.class_names
    shown = ", ".join(names[:10]) + (", …" if len(names) > 10 else "")
    return (f"**Model:** {loaded.label} · `{loaded.config.get('arch')}` · {len(names)} classes ({shown}) · "
            f"{loaded.image_size}×{loaded.image_size} px")


def describe_model(loaded: LoadedModel) -> str:
    """Markdown summary of a loaded model: architecture, classes, input size, training, reference energies."""
    cfg = loaded.config
    names = loaded.class_names
    shown = ", ".join(names[:12]) + (f", … ({len(names)} in all)" if len(names) > 12 else "")
    rows = [("Source", loaded.label), ("Architecture", f"`{cfg.get('arch')}` "
                                                       f"({count_parameters(loaded.model) / 1e6:.2f} M parameters)"),
            ("Classes", shown), ("Input size", f"{loaded.image_size} × {loaded.image_size} px")]
    training = cfg.get("training")
    if isinstance(training, dict) and training:   # a checkpoint's own words: only what training writes is shown
        stage = training.get("stage") if training.get("stage") in STAGES else "?"
        text = f"{stage}, {_whole(training.get('step'))} steps"
        if "T" in training:
            text += f", final contrastive steps T = {_whole(training['T'])}"
        rows.append(("Training", text))
        validation = training.get("validation")
        for k, v in (validation.items() if isinstance(validation, dict) else ()):
            if isinstance(v, (int, float)) and isinstance(k, str) and re.fullmatch(r"[a-z0-9_]{1,40}", k):
                rows.append((f"Validation {k.replace('_', ' ')}", fmt(v, 4)))
    if cfg.get("temperature") is not None:  # validated on load: a number in TEMPERATURE_RANGE
        cal = cfg.get("calibration") if isinstance(cfg.get("calibration"), dict) else {}
        before, after, n = cal.get("ece_before"), cal.get("ece_after"), cal.get("n")
        fitted = (f" on {n} validation images (ECE {before:.1%} → {after:.1%})" if all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in (before, after, n)) else "")
        rows.append(("Calibration", f"logits divided by a temperature T = {fmt(cfg['temperature'], 3)} fitted"
                                    f"{fitted}: it changes how sure the model says it is, not what it predicts"))
    q = cfg.get("energy_quantiles")
    if q:
        rows.append(("Reference energies", "E(x) of held-out images: " + ", ".join(
            f"{float(k) * 100:g}%: {fmt(v)}" for k, v in sorted(q.items(), key=lambda kv: float(kv[0]))
            if k in ("0.01", "0.5", "0.99"))))
    else:
        rows.append(("Reference energies", f"{NO_REFERENCE}: none stored, so the app cannot say how typical an "
                                           "energy is (imported checkpoints carry none)"))
    return "| About this model | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def card_text(loaded: LoadedModel) -> str:
    """The model card's prose for the Model tab (its Hub YAML metadata left out)."""
    try:
        text = model_card(loaded.directory)
    except UnicodeDecodeError:
        return "_The model card (README.md) is not shown: it is not UTF-8 text._"
    except (OSError, ValueError) as e:  # larger than MAX_CARD_BYTES (unread), unreadable: a card is optional
        said = str(e) if isinstance(e, ValueError) else "it could not be read"
        return f"_The model card is not shown: {said}._"
    if text and len(text) > MAX_CARD_CHARS:
        text = text[:MAX_CARD_CHARS] + "\n\n_… (the rest of the model card is not shown)_"
    if not text:
        return "_This checkpoint has no model card (README.md)._"
    return split_card(text)[1] or "_The model card has metadata only._"


def typicality(energy: float, quantiles: dict[str, float] | None) -> str:
    """How typical an energy is against the model's stored in-distribution energies, in words."""
    if not quantiles:
        return f"{NO_REFERENCE} in this checkpoint, so how typical this energy is cannot be said"
    p = float(energy_percentile(energy, quantiles))
    levels = sorted(float(k) * 100 for k in quantiles)
    if p <= levels[0] + 1e-9:
        return f"lower than {100 - levels[0]:g}% of held-out training-distribution images: very typical"
    if p >= levels[-1] - 1e-9:
        return (f"higher than {levels[-1]:g}% of held-out training-distribution images: unusual for this model "
                "(possibly out of distribution)")
    return f"more typical than {100 - p:.0f}% of held-out training-distribution images"

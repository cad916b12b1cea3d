"""Training curves PNG from a run's metrics.jsonl (one panel per logged quantity)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..files import replacing  # noqa: E402

PANELS = (("loss", "loss_ce", "loss_bce"), ("T",), ("adv_auc", "clean_auc"),
          ("energy_real", "energy_contrastive", "energy_ood"), ("adv_train_accuracy",), ("lr",), ("images_per_s",))


def plot_curves(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    rows = []
    for line in Path(metrics_path).read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut short or garbled: the curves skip it
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    if not rows:
        return None
    panels = [p for p in PANELS if any(k in rows[0] for k in p)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.8), squeeze=False)
    steps = [r["step"] for r in rows]
    for ax, keys in zip(axes[0], panels):
        for k in keys:
            if k in rows[0]:
                ax.plot(steps, [r.get(k) for r in rows], label=k)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with replacing(Path(out_path)) as tmp:   # a kill mid-write keeps the previous curves
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(out_path)

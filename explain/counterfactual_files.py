"""The files of one `python -m explain counterfactual` run: each path's four files (in one folder per target when
there are several, with grid.png and summary.json), and what --alternatives, --card and --minimal add."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any


def write_counterfactual(args: argparse.Namespace, model, image, mask, trajs: list, params: dict[str, Any],
                         confidences: list[float] | None, out: Path) -> list[Path]:
    """Every file of a counterfactual run, into `out` (the run's private folder)."""
    import numpy as np

    from dat_core.sampling import make_grid, save_png

    from .cli_options import minimal_png
    from .export import save_json, write_trajectory
    from .trajectory import minimal_counterfactual

    wrote: list[Path] = []
    if len(trajs) == 1:
        wrote += write_trajectory(trajs[0], out, args.scale, args.duration_ms)
        print(trajs[0].summary())
    else:
        for t in trajs:
            sub = out / f"{t.target:02d}-{_safe(t.class_names[t.target])}"
            sub.mkdir(exist_ok=True)
            wrote += write_trajectory(t, sub, args.scale, args.duration_ms)
            print(t.summary())
        # row 1: x_0 then x_T for every target
        finals = np.stack([trajs[0].frames[0]] + [t.frames[-1] for t in trajs])
        save_png(make_grid(finals, nrow=len(finals), scale=4), out / "grid.png")
        wrote += [out / "grid.png", save_json([_summary_row(t) for t in trajs], out / "summary.json")]
    if args.alternatives:
        wrote += _write_alternatives(args, model, image, trajs[0].target, params, out, mask)
    if args.card:
        from .card_cli import write_card_for
        wrote += write_card_for(args, model, trajs[0], out, mask)
    if confidences:
        search = minimal_counterfactual(model, image, trajs[0].target, confidences, step_size=params.get("step_size"),
                                        objective=trajs[0].params["objective"], autocast=args.autocast)
        wrote.append(save_json(search.to_dict(), out / "minimal.json"))
        for r in search.results:
            if r.frame is None:
                print(f"p(target) >= {r.confidence:g}: not reached on the unbounded path")
                continue
            p = out / minimal_png(r.confidence)
            save_png(make_grid(np.stack([trajs[0].frames[0], r.frame]), nrow=2, scale=args.scale), p)
            wrote.append(p)
            print(f"p(target) >= {r.confidence:g}: L2 radius {r.radius:.3f} (p = {r.achieved:.3f})")
    return wrote


def _write_alternatives(args: argparse.Namespace, model, image, target: int, params: dict[str, Any], out: Path,
                        mask) -> list[Path]:
    import numpy as np
    import torch

    from dat_core.sampling import make_grid, save_png

    from .diverse import alternatives
    from .export import save_json

    alt = alternatives(model, image, target, args.alternatives, autocast=args.autocast, mask=mask, **params)
    grid = torch.from_numpy(np.concatenate([alt.image[None], alt.images]))
    save_png(make_grid(grid, nrow=len(grid), scale=args.scale), out / "alternatives.png")
    print(f"{args.alternatives} alternatives: diversity {alt.diversity:.2f}, p(target) "
          + " ".join(f"{c:.2f}" for c in alt.confidence))
    return [out / "alternatives.png", save_json(alt.to_dict(), out / "alternatives.json")]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "class"


def _summary_row(t) -> dict:
    """One target's line in summary.json: where its path ends (and, for a --guide run, the guide's reading)."""
    return ({"target": t.target, "target_name": t.class_names[t.target], "flip_step": t.flip_step,
             "confidence": float(t.confidence[-1]), "l2": float(t.l2[-1])}
            | {k: t.params[k] for k in ("guide", "guide_p_target") if k in t.params})

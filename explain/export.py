"""Exports: animated GIF / APNG of a trajectory, a PNG contact strip, metrics JSON, matplotlib figures.

Frames are upscaled by pixel repetition (nearest neighbour), so a 32x32 frame stays crisp.
Animated GIF/APNG encoders merge pixel-identical consecutive frames; a thin progress bar under each
frame (on by default) keeps every step distinct, so the file holds all T+1 frames.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dat_core.files import remove_stale, replacing, write_text
from dat_core.sampling import save_png

from .params import parse_int
from .trajectory import Trajectory

__all__ = ["save_gif", "save_apng", "contact_strip", "save_metrics_json", "save_json", "save_figure",
           "save_png", "upscale"]


def upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscale of (..., H, W, C) by an integer factor (crisp pixels, no blur)."""
    scale = parse_int("scale", scale, 1, 64)
    return frames if scale == 1 else frames.repeat(scale, axis=-3).repeat(scale, axis=-2)


def _frames(traj_or_frames: Trajectory | np.ndarray) -> np.ndarray:
    frames = traj_or_frames.frames if isinstance(traj_or_frames, Trajectory) else np.asarray(traj_or_frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty (F, H, W, 3) uint8 array; got {frames.shape} {frames.dtype}")
    return frames


BAR_BACKGROUND, BAR_FILL = (224, 224, 224), (40, 90, 200)

MAX_ANIMATION_BYTES = 2 * 2**30
"""What the frames of one GIF or APNG may hold while it is written: Pillow's writers keep every frame until the end
(a palette byte a pixel for GIF, three for APNG), so 1000 steps of a 224 px path at scale 8 asked for 10 GB."""


def check_animation(frames: int, height: int, width: int, scale: int, bytes_per_pixel: int = 3) -> None:
    """ValueError, before anything is drawn, when `frames` frames of height x width upscaled by `scale` pass
    `MAX_ANIMATION_BYTES`."""
    need = frames * height * width * scale * scale * bytes_per_pixel
    if need > MAX_ANIMATION_BYTES:
        raise ValueError(f"an animation of {frames} frames of {width * scale}x{height * scale} px would hold "
                         f"{need / 2**30:.1f} GB while it is written (at most {MAX_ANIMATION_BYTES >> 30} GB): ask "
                         "for a smaller --scale or fewer steps")


def _progress_bar(n: int, width: int, scale: int) -> np.ndarray:
    """(n, rows, width) uint8: 0 background, 1 filled; frame i fills i / (n - 1) of the width."""
    bar = np.zeros((n, max(3, scale), width), dtype=np.uint8)
    filled = np.round(np.arange(n) / max(1, n - 1) * width).astype(int)
    for i, f in enumerate(filled):
        bar[i, 1:, :f] = 1
    return bar


def _animation_frames(traj_or_frames: Trajectory | np.ndarray, scale: int, progress: bool) -> list[Image.Image]:
    """Full-colour (RGB) frames, upscaled, with the progress bar underneath."""
    big = upscale(_frames(traj_or_frames), scale)
    if progress:
        colours = np.array([BAR_BACKGROUND, BAR_FILL], dtype=np.uint8)
        big = np.concatenate([big, colours[_progress_bar(len(big), big.shape[2], scale)]], axis=1)
    return [Image.fromarray(f) for f in big]


def _paletted_frames(frames: np.ndarray | Sequence[np.ndarray], scale: int, progress: bool) -> Iterator[Image.Image]:
    """Palette (P) frames for GIF, made one at a time: each frame's adaptive palette is computed at model
    resolution and the palette indices are upscaled afterwards. An upscale only repeats pixels, so the colour
    histogram is the same up to a constant factor; at 32x32 and scale 8 this is ~25% faster than quantizing the
    upscaled frames."""
    colours = 254 if progress else 256  # the last two palette entries draw the progress bar
    shape = bar = None
    for i, frame in enumerate(frames):
        frame = _frames(np.asarray(frame)[None])[0]   # a sequence's frames are checked as they come
        if (shape := shape or frame.shape) != frame.shape:
            raise ValueError(f"frame {i} is {frame.shape}; the first was {shape}")
        if progress and bar is None:
            bar = _progress_bar(len(frames), shape[1] * scale, scale)
        q = Image.fromarray(frame).quantize(colours, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE)
        index = upscale(np.asarray(q)[..., None], scale)[..., 0]
        palette = q.getpalette()[:3 * colours]
        palette += [0] * (3 * colours - len(palette))
        if bar is not None:
            index = np.concatenate([index, bar[i] + np.uint8(colours)])
            palette += [*BAR_BACKGROUND, *BAR_FILL]
        im = Image.fromarray(np.ascontiguousarray(index), mode="P")
        im.putpalette(palette)
        yield im


def _durations(n: int, duration_ms: int, last_ms: int) -> list[int]:
    if not (0 < duration_ms <= 60_000 and 0 < last_ms <= 60_000):
        raise ValueError("durations must lie in 1..60000 ms")
    return [duration_ms] * (n - 1) + [last_ms]


def save_gif(traj_or_frames: Trajectory | np.ndarray | Sequence[np.ndarray], path: str | Path, scale: int = 8,
             duration_ms: int = 80, last_ms: int = 1000, progress: bool = True) -> Path:
    """Animated, looping GIF of every frame: an adaptive palette per frame, no dithering. Max-coverage
    quantization: on trajectory frames its colour error was max 10 / mean 2.2 levels against 12 / 2.7 for
    fast octree (43 / 3.0 on smooth gradients) and 30 / 2.1 for median cut; it costs ~6 ms a frame
    (fast octree 0.2 ms). `save_apng` is lossless. Frames may also be a sequence of (H, W, 3) uint8 arrays made
    as they are read (the app's labelled sampling grids): only the writer's palette frames are held, a byte a pixel."""
    lazy = isinstance(traj_or_frames, Sequence) and len(traj_or_frames) > 0
    frames = traj_or_frames if lazy else _frames(traj_or_frames)
    height, width = (*np.shape(frames[0]), 0, 0)[:2]   # a frame of another shape is refused as it is read
    check_animation(len(frames), height, width, parse_int("scale", scale, 1, 64), bytes_per_pixel=1)
    durations = _durations(len(frames), duration_ms, last_ms)
    paletted = _paletted_frames(frames, scale, progress)
    path = Path(path)
    with replacing(path) as tmp:   # whole or not at all: a stop mid-write keeps the previous file
        next(paletted).save(tmp, format="GIF", save_all=True, append_images=paletted, loop=0, duration=durations,
                            optimize=False)
    return path


def save_apng(traj_or_frames: Trajectory | np.ndarray, path: str | Path, scale: int = 8, duration_ms: int = 80,
              last_ms: int = 1000, progress: bool = True) -> Path:
    """Animated PNG (lossless, full colour) of every frame, looping."""
    frames = _frames(traj_or_frames)
    check_animation(len(frames), *frames.shape[1:3], parse_int("scale", scale, 1, 64))
    images = _animation_frames(frames, scale, progress)
    path = Path(path)
    with replacing(path) as tmp:
        images[0].save(tmp, format="PNG", save_all=True, append_images=images[1:], loop=0,
                       duration=_durations(len(images), duration_ms, last_ms))
    return path


def _pick(n_frames: int, n: int) -> np.ndarray:
    return np.unique(np.round(np.linspace(0, n_frames - 1, max(1, min(n, n_frames)))).astype(int))


def contact_strip(traj_or_frames: Trajectory | np.ndarray, n: int = 10, scale: int = 4, labels: bool = True,
                  pad: int = 2) -> np.ndarray:
    """One row of `n` evenly spaced frames (first and last included), labelled with the step and,
    for a Trajectory, p(target); returns a uint8 (H, W, 3) image."""
    frames = _frames(traj_or_frames)
    idx = _pick(len(frames), parse_int("n", n, 1))
    tiles = upscale(frames[idx], scale)
    _, h, w, _ = tiles.shape
    font = ImageFont.load_default()
    line_h = 12
    label_h = 2 * line_h + 2 if labels else 0
    strip = Image.new("RGB", (len(idx) * (w + pad) + pad, h + 2 * pad + label_h), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for k, i in enumerate(idx):
        x = pad + k * (w + pad)
        strip.paste(Image.fromarray(tiles[k]), (x, pad))
        if labels:
            if isinstance(traj_or_frames, Trajectory):
                text = [f"t={int(traj_or_frames.steps[i])}", f"p={traj_or_frames.confidence[i]:.2f}"]
            else:
                text = [f"#{i}"]
            for j, line in enumerate(text):
                draw.text((x + 1, h + pad + 1 + j * line_h), line, fill=(0, 0, 0), font=font)
    return np.asarray(strip)


def _dumps(obj: Any, indent: str = "") -> str:
    """JSON with one key per line and each list of numbers on one line (readable, diff-friendly)."""
    inner = indent + " "
    if isinstance(obj, dict) and obj:
        items = (f"{inner}{json.dumps(str(k))}: {_dumps(v, inner)}" for k, v in obj.items())
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(obj, list) and obj and all(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + _dumps(v, inner) for v in obj) + "\n" + indent + "]"
    return json.dumps(obj, allow_nan=False)


def save_json(data: Any, path: str | Path) -> Path:
    """Write strict JSON (no NaN/Infinity literals), whole or not at all (`dat_core.files.write_text`)."""
    return write_text(Path(path), _dumps(data) + "\n")


def save_metrics_json(traj: Trajectory | Sequence[Trajectory], path: str | Path) -> Path:
    """Per-step metrics (Trajectory.to_dict) as JSON; a list of trajectories becomes a JSON list."""
    data = traj.to_dict() if isinstance(traj, Trajectory) else [t.to_dict() for t in traj]
    return save_json(data, path)


def save_figure(fig, path: str | Path, dpi: int = 150) -> Path:
    """Save a matplotlib figure as PNG and close it (frees its memory in long-running apps)."""
    from .plots import close_figure  # matplotlib only when a figure is saved

    path = Path(path)
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        close_figure(fig)
    return path


def write_trajectory(traj: Trajectory, out: Path, scale: int = 8, duration_ms: int = 80) -> list[Path]:
    """The four files of one path in `out`, as `python -m explain counterfactual` writes them."""
    save_png(contact_strip(traj, n=10, scale=4), out / "strip.png")
    return [save_gif(traj, out / "trajectory.gif", scale=scale, duration_ms=duration_ms),
            save_apng(traj, out / "trajectory.png", scale=scale, duration_ms=duration_ms),
            out / "strip.png", save_metrics_json(traj, out / "metrics.json")]


COUNTERFACTUAL_OUTPUTS = ("trajectory.gif", "trajectory.png", "strip.png", "metrics.json", "grid.png", "summary.json",
                          "alternatives.png", "alternatives.json", "card.json", "card.png", "minimal.json",
                          "minimal_*.png")
"""What `python -m explain counterfactual` may write at the top of its --out; with several targets, also one
folder per target named NN-class."""


MANIFEST = ".counterfactual.json"
"""What the last `counterfactual` run into a folder wrote (paths relative to it): all that the next one removes."""


@contextmanager
def staged(out: Path, drop: Callable[[list[Path]], object]) -> Iterator[Path]:
    """A private folder inside `out` for all of one run's outputs. When the block ends, `drop(new)` removes the
    earlier run's outputs (`new`: this run's, as they will be named in `out`), then this run's move in. A stop or
    an error inside the block leaves `out` as it was: a folder never holds files of two runs, which a reader
    would take for one (files replaced one by one left a new strip.png beside an old gif, an old summary.json).
    A stop during the moves themselves (renames: milliseconds) can leave part of the new run, never any of the
    earlier one; its manifest already names the new files, so the next run removes them."""
    out.mkdir(parents=True, exist_ok=True)
    remove_stale(out, ".explain-run.")   # what a killed run left (SIGKILL: no `finally`)
    stage = out / f".explain-run.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    stage.mkdir()
    try:
        yield stage
        files = sorted(p.relative_to(stage) for p in stage.rglob("*") if p.is_file())
        drop([out / p for p in files])
        for p in files:
            (out / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(stage / p, out / p)   # a rename (another file system, behind a link: a copy)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def moved(paths: Sequence[Path], stage: Path, out: Path) -> list[Path]:
    """Where `staged` put `paths` written in `stage`."""
    return [out / Path(p).relative_to(stage) for p in paths]


def _ours(out: Path, p: Path) -> bool:
    """A file of the folder `out` with no link on its way there: nothing outside `out` is ever touched."""
    return p.is_file() and p.resolve() == out.resolve() / p.relative_to(out)


def remove_outputs(out: Path, paths: Sequence[Path]) -> list[Path]:
    """Remove the files `paths` of `out` (not through a link; a folder they leave empty too); returns them."""
    gone = [p for p in paths if _ours(out, p)]
    for p in gone:
        p.unlink()
        if p.parent != out and not any(p.parent.iterdir()):   # a target folder it emptied
            p.parent.rmdir()
    return gone


def fixed_outputs(out: Path, names: Sequence[str]) -> Callable[[list[Path]], list[Path]]:
    """`staged`'s `drop` for a command whose outputs have fixed names: all of an earlier run's go, also one this
    run does not write again (`generate`'s sampling.gif without --record-every)."""
    return lambda new: remove_outputs(out, [out / n for n in names])


def drop_earlier(out: Path, wrote: Sequence[Path]) -> list[Path]:
    """Remove what an earlier `counterfactual` run into `out` wrote, and record `wrote` (this run's outputs) in
    `MANIFEST` for the next one: an old minimal.json beside a run without --minimal would read as this run's. Only
    what the manifest lists is touched (`generate` writes a grid.png too). A folder from before the manifest: the
    command's own names, grid.png only beside its summary.json, also in a target folder that holds a
    metrics.json. A user's own files stay, and nothing behind a link is touched."""
    listed = _manifest(out / MANIFEST)
    if listed is not None:
        stale = [out / name for name in listed]
    else:
        names = [n for n in COUNTERFACTUAL_OUTPUTS if n != "grid.png" or (out / "summary.json").is_file()]
        targets = [d for d in out.glob("[0-9][0-9]*-*") if (d / "metrics.json").is_file()]
        stale = [p for folder in (out, *targets) for pattern in names for p in folder.glob(pattern)]
    gone = remove_outputs(out, stale)
    root = out.resolve()
    kept = (Path(p).resolve() for p in wrote)
    write_text(out / MANIFEST, json.dumps(sorted(str(p.relative_to(root)) for p in kept if p.is_relative_to(root))))
    return gone


def _manifest(path: Path) -> list[str] | None:
    """The names a manifest lists, each inside its folder; None when there is none (or it is not one)."""
    from dat_core.files import read_json

    try:
        names = read_json(path, 1 << 20, path.name, "a list of outputs") if path.is_file() else None
    except (ValueError, OSError):
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None
    return [n for n in names if n and not Path(n).is_absolute() and ".." not in Path(n).parts]

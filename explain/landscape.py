"""Energy landscape around a counterfactual: the energy on a 2-D plane through x_0.

The plane is spanned by the counterfactual direction `u = (x_T - x_0) / ||x_T - x_0||` and a second
unit direction `v` orthogonal to it (another class's logit gradient at x_0, or seeded random noise).
Coordinates are in L2 units of the image in [0,1]: the point (a, b) is the image x_0 + a u + b v.
Points of the plane that leave [0,1] are **clamped** to [0,1] before the forward pass, so the
picture is the energy on the "clamped plane"; `Landscape.clamped` reports, per grid point, the
fraction of pixel values that needed clamping. The PGD path is projected onto (u, v); `residual`
says how far each frame lies off the plane, so a path that leaves the plane is visible, not hidden.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from dat_core.energy import joint_energy, marginal_energy
from dat_core.pgd import attack_mode
from dat_core.runtime import check_seed, model_device

from .image import check_frames
from .params import parse_int, resolve_class
from .plots import ENERGY_CMAP, close_figure, new_figure

ENERGIES = ("marginal", "joint")
MIN_SPAN = 0.25
"""Smallest half-width of the grid (L2 units), so a path of length ~0 still shows a neighbourhood."""


@dataclass
class Landscape:
    """Energies on the plane x_0 + a u + b v; `values[i, j]` is the energy at (alphas[j], betas[i]).

    Rows follow `betas` (y axis), columns follow `alphas` (x axis) — matplotlib's image convention.
    `alphas[N // 2] == betas[N // 2] == 0` exactly, so `values[N // 2, N // 2]` is E(x_0).
    """

    alphas: np.ndarray        # (N,) coordinate along u, L2 units
    betas: np.ndarray         # (N,) coordinate along v, L2 units
    values: np.ndarray        # (N, N) float32 energy
    clamped: np.ndarray       # (N, N) float32 fraction of pixel values clamped to [0,1] at each point
    u: np.ndarray             # (3, H, W) float32 unit L2 counterfactual direction
    v: np.ndarray             # (3, H, W) float32 unit L2 second direction, orthogonal to u
    u_label: str              # what u is, in words
    v_label: str              # what v is, in words
    path_xy: np.ndarray       # (T+1, 2) projection of x_t - x_0 on (u, v); path_xy[0] == (0, 0)
    path_energy: np.ndarray   # (T+1,) energy of each trajectory frame (the 1-D profile along the path)
    path_steps: np.ndarray    # (T+1,) PGD step of each frame
    residual: np.ndarray      # (T+1,) L2 norm of the part of x_t - x_0 outside the plane
    energy: str               # "marginal" | "joint"
    energy_label: str         # "E(x)" or "E(x, y=cat)"
    energy_class: int | None  # y of the joint energy (None for the marginal energy)
    target: int               # target class of the counterfactual
    source: int               # class predicted at x_0
    class_names: list[str]

    @property
    def origin_value(self) -> float:
        n = len(self.alphas) // 2
        return float(self.values[n, n])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe data (grid, energies, projected path; not u, v): floats to 6 significant digits,
        non-finite values as None."""
        keys = ("alphas", "betas", "values", "clamped", "path_xy", "path_energy", "path_steps", "residual",
                "energy", "energy_label", "energy_class", "u_label", "v_label", "target", "source", "class_names")
        return {k: _json_value(getattr(self, k)) for k in keys}


def _json_value(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        if v.dtype.kind == "f":
            return [_json_value(x) for x in v] if v.ndim > 1 else [
                float(f"{x:.6g}") if math.isfinite(x) else None for x in v.astype(np.float64)]
        return v.tolist()
    return v


def _unit(t: torch.Tensor) -> tuple[torch.Tensor, float]:
    n = float(t.norm())
    return (t / n if n > 0 else t), n


def _logit_gradient(model: nn.Module, x0: torch.Tensor, c: int) -> torch.Tensor:
    """d f(x)[c] / dx at x_0, shape of x_0 (no batch dim)."""
    with attack_mode(model), torch.enable_grad():
        x = x0.unsqueeze(0).clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(x)[0, c], x)
    return g[0].float()


def _class(name: str, value: Any, class_names: list[str]) -> int:
    """A class given by index or name, as everywhere else (`resolve_class`), the option named in the error."""
    try:
        return resolve_class(value, class_names)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def _random_direction(shape: torch.Size, seed: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).to(device)


def _energy_fn(energy: str, target: int):
    if energy == "marginal":
        return marginal_energy
    return lambda logits: joint_energy(logits, target)


def default_batch_size(height: int, width: int) -> int:
    """Images per no-grad forward of a landscape: 64 at 32x32, scaled down with the pixel count, at least 4
    (the app compiles this shape ahead)."""
    return max(4, 64 * 32 * 32 // (height * width))


def _batched_energy(model: nn.Module, images: torch.Tensor, fn, batch_size: int, autocast: bool) -> np.ndarray:
    out = []
    with attack_mode(model), torch.no_grad(), torch.autocast(images.device.type, dtype=torch.bfloat16,
                                                             enabled=autocast):
        for i in range(0, images.shape[0], batch_size):
            # channels-last input: oneDNN convolutions run ~3x faster on CPU (measured), same values
            out.append(fn(model(images[i:i + batch_size].contiguous(memory_format=torch.channels_last)).float()))
    return torch.cat(out).cpu().numpy().astype(np.float32)


def check_span(span: float | tuple[float, float], numel: int) -> tuple[float, float]:
    """(along u, along v) half-widths, each > 0 and at most the L2 diameter of [0,1]^numel: a wider plane only
    clamps to the cube's corners (and 1e300 overflowed float32 into NaN energies)."""
    try:
        span_a, span_b = (float(span), float(span)) if np.isscalar(span) else map(float, span)
    except (TypeError, ValueError):
        raise ValueError(f"span must be one number or two, got {span!r}") from None
    diameter = math.sqrt(numel)
    if not (0 < span_a <= diameter and 0 < span_b <= diameter):
        raise ValueError(f"span must be > 0 and at most {diameter:.4g} (the L2 diameter of the image space), "
                         f"got {span!r}")
    return span_a, span_b


def energy_landscape(model: nn.Module, trajectory: Any, *, direction: str | int = "random", grid: int = 33,
                     span: float | tuple[float, float] | None = None, energy: str = "marginal",
                     target: int | None = None, seed: int = 0, batch_size: int | None = None,
                     autocast: bool = False) -> Landscape:
    """Evaluate the energy on a `grid` x `grid` lattice of the plane through x_0 spanned by (u, v).

    trajectory: anything with `images` ((T+1, 3, H, W) float in [0,1]), `source`, `target`,
        `class_names` (an `explain.trajectory.Trajectory`, or a stand-in). `steps` is used if present.
    direction: "random" (seeded Gaussian) or a class index c (gradient of f(x)[c] at x_0); either
        is Gram-Schmidt-orthogonalised to u. If it is (numerically) parallel to u, a seeded random
        direction is used instead and `v_label` says so.
    u: (x_T - x_0) normalised; if x_T == x_0, the gradient of the target logit at x_0 (and if that is
        zero too, seeded random noise); `u_label` says which.
    grid: odd N >= 3, so that 0 is exactly a grid point on both axes.
    span: half-width of the grid in L2 units (one number for both axes, or (along u, along v)).
        Default: 1.25 x the largest |projection| of the path, at least `MIN_SPAN`, same on both axes.
    energy: "marginal" E(x) = -logsumexp f(x), or "joint" E(x, y) = -f(x)[y] with y = `target`
        (default: the trajectory's target).
    batch_size: images per no-grad forward (bounds memory); default 64 at 32x32 (on a 2-core CPU
        32-128 are within ~10% of each other, 256 is slower), scaled down with the pixel count,
        at least 4 (raise it on a GPU).
    autocast: bf16 forwards (~2x faster on CPUs with AVX512-BF16); values then carry bf16 rounding.
    """
    if energy not in ENERGIES:
        raise ValueError(f"unknown energy {energy!r}; use one of {ENERGIES}")
    grid = parse_int("grid", grid, 3)
    if grid % 2 == 0:
        raise ValueError(f"grid must be an odd integer >= 3 (so 0 is a grid point), got {grid!r}")
    images_np = check_frames(trajectory.images, (getattr(model, "config", None) or {}).get("image_size"))
    batch_size = (default_batch_size(images_np.shape[2], images_np.shape[3]) if batch_size is None
                  else parse_int("batch_size", batch_size, 1, 1 << 20))
    class_names = list(trajectory.class_names)   # a stand-in's -1 was read as the last class, silently
    source, target_cf = (_class(f"trajectory.{k}", getattr(trajectory, k), class_names) for k in ("source", "target"))
    steps = getattr(trajectory, "steps", None)
    path_steps = np.arange(len(images_np)) if steps is None else np.asarray(steps)
    if path_steps.shape != (len(images_np),):   # else the plot failed late, on "x and y" shapes
        raise ValueError(f"trajectory.steps must give one step per frame ({len(images_np)}), got {path_steps.shape}")
    target = target_cf if target is None else _class("target", target, class_names)
    if direction != "random":
        direction = _class("direction ('random' or a class)", direction, class_names)
    seed = check_seed(seed)

    device = model_device(model)
    images = torch.from_numpy(images_np).to(device)
    x0 = images[0]
    u, dist = _unit(images[-1] - x0)
    u_label = "toward the counterfactual x_T"
    if dist == 0.0:
        u, n = _unit(_logit_gradient(model, x0, target_cf))
        u_label = f"gradient of the {class_names[target_cf]} logit (x_T = x_0)"
        if n == 0.0:
            u, _ = _unit(_random_direction(x0.shape, seed + 1, device))
            u_label = f"random (seed {seed + 1}; x_T = x_0 and zero gradient)"

    def orthogonal(w: torch.Tensor) -> tuple[torch.Tensor, float]:
        w = w - (w * u).sum() * u
        w = w - (w * u).sum() * u  # second pass: Gram-Schmidt in float32 needs it for tight orthogonality
        return _unit(w)

    if direction == "random":
        v, n = orthogonal(_random_direction(x0.shape, seed, device))
        v_label = f"random (seed {seed})"
    else:
        g = _logit_gradient(model, x0, direction)
        v, n = orthogonal(g)
        v_label = f"gradient of the {class_names[direction]} logit, orthogonalised"
        if n <= 1e-6 * float(g.norm()) or n == 0.0:
            v, n = orthogonal(_random_direction(x0.shape, seed, device))
            v_label = f"random (seed {seed}; the {class_names[direction]} gradient is parallel to u or zero)"

    # projection of the path on the plane, in float64 so path_xy[0] is exactly (0, 0)
    d = (images - x0).flatten(1).double()
    uv = torch.stack([u.flatten(), v.flatten()]).double()
    coords = d @ uv.T
    residual = (d - coords @ uv).norm(dim=1)
    path_xy = coords.cpu().numpy()

    if span is None:
        s = max(MIN_SPAN, 1.25 * float(np.abs(path_xy).max()))
        span_a = span_b = s
    else:
        span_a, span_b = check_span(span, x0.numel())
    half = grid // 2
    ticks = np.arange(-half, half + 1, dtype=np.float64) / half  # exact 0 in the middle
    alphas, betas = span_a * ticks, span_b * ticks

    fn = _energy_fn(energy, target)
    A, B = np.meshgrid(alphas, betas)  # A[i, j] = alphas[j], B[i, j] = betas[i]
    coeff = torch.from_numpy(np.stack([A.ravel(), B.ravel()], axis=1)).float().to(device)
    base, uv32 = x0.flatten(), uv.float()
    values, clamped = [], []
    for i in range(0, coeff.shape[0], batch_size):
        pts = base + coeff[i:i + batch_size] @ uv32       # (b, P); (0, 0) gives x_0 exactly
        outside = ((pts < 0) | (pts > 1)).float().mean(dim=1)
        pts = pts.clamp_(0, 1).view(-1, *x0.shape)
        values.append(_batched_energy(model, pts, fn, batch_size, autocast))
        clamped.append(outside.cpu().numpy())
    values_np = np.concatenate(values).reshape(grid, grid)
    clamped_np = np.concatenate(clamped).reshape(grid, grid).astype(np.float32)

    label = "E(x)" if energy == "marginal" else f"E(x, y={class_names[target]})"
    return Landscape(
        alphas=alphas, betas=betas, values=values_np, clamped=clamped_np,
        u=u.cpu().numpy(), v=v.cpu().numpy(), u_label=u_label, v_label=v_label,
        path_xy=path_xy, path_energy=_batched_energy(model, images, fn, batch_size, autocast),
        path_steps=path_steps, residual=residual.cpu().numpy(), energy=energy, energy_label=label,
        energy_class=target if energy == "joint" else None, target=target_cf, source=source,
        class_names=class_names)


# ---------------------------------------------------------------- sizing a landscape to the server

LANDSCAPE_BUDGET_S = 60.0
"""The longest a landscape request should take: a bigger grid is shrunk to fit (`plan_landscape`)."""
LANDSCAPE_MEMORY_BYTES = 2**30
"""Activation memory one no-grad batch may use: bounds the batch size."""
MAX_BATCH = 64


@dataclass(frozen=True)
class LandscapePlan:
    """A landscape sized to a time and memory budget: the grid (odd, at most the one asked for) and batch."""

    grid: int                 # points per side
    batch_size: int           # images per no-grad forward
    seconds: float            # estimated time of the grid's and the path's forwards
    requested: int            # the grid asked for

    @property
    def reduced(self) -> bool:
        return self.grid < self.requested


def plan_landscape(grid: int, path_frames: int, seconds_per_image: float, activation_bytes: int, *,
                   budget_s: float = LANDSCAPE_BUDGET_S, memory_bytes: int = LANDSCAPE_MEMORY_BYTES,
                   min_grid: int = 5) -> LandscapePlan:
    """The largest odd grid <= `grid` (and >= `min_grid`) whose grid² + path forwards fit `budget_s` at
    `seconds_per_image`, and the batch whose fp32 activations (`activation_bytes` an image, as
    `dat_core.models.config.model_cost` measures them: an upper bound for a no-grad forward) fit `memory_bytes`."""
    batch = int(max(1, min(MAX_BATCH, memory_bytes // max(1, activation_bytes))))
    fit = grid
    while fit > min_grid and (fit * fit + path_frames) * seconds_per_image > budget_s:
        fit -= 2
    return LandscapePlan(fit, batch, (fit * fit + path_frames) * seconds_per_image, grid)


def seconds_per_image(model: nn.Module, image_size: int, autocast: bool = False, n: int = 4) -> float:
    """Time of a no-grad forward per image, from one timed batch of `n` random images (no warm-up: the first
    call's one-time costs make it an overestimate, on the safe side)."""
    x = torch.rand(n, 3, image_size, image_size, device=model_device(model))
    start = time.perf_counter()
    _batched_energy(model, x, marginal_energy, n, autocast)
    return (time.perf_counter() - start) / n


def _check_step(step: int | None, n: int) -> int | None:
    if step is None:
        return None
    if not -n <= step < n:
        raise ValueError(f"step {step} out of range for a path of {n} frames")
    return step % n


def _ring(ax, ms: float, **kw):
    """The red ring that marks the current step."""
    return ax.plot([], [], "o", ms=ms, mfc="none", mec="red", mew=2, zorder=5, **kw)[0]


def plot_landscape(landscape: Landscape, step: int | None = None, class_names: list[str] | None = None):
    """Figure: left, the energy on the plane with the projected path; right, energy along the path.

    `step` is an index into the trajectory frames (negative counts from the end); a red ring marks
    it on both panels. Returns a `matplotlib.figure.Figure` outside pyplot (convert and close it
    with `explain.plots.figure_to_array`). To scrub through steps, `LandscapeRenderer` is faster.
    """
    fig, (ax, ax1) = _draw(landscape, class_names)
    step = _check_step(step, len(landscape.path_xy))
    if step is not None:
        L = landscape
        _ring(ax, 13, label=f"step {int(L.path_steps[step])}").set_data([L.path_xy[step, 0]], [L.path_xy[step, 1]])
        _ring(ax1, 11).set_data([L.path_steps[step]], [L.path_energy[step]])
        ax.legend(loc="upper left", fontsize=8, framealpha=0.8)
    return fig


class LandscapeRenderer:
    """Draw the landscape figure once; `render(step)` then redraws only the step markers (blitting).

    For scrubbing a slider: much cheaper than `figure_to_array(plot_landscape(L, step))` per step.
    One renderer per thread/session; `close()` (or a `with` block) releases the figure.
    """

    def __init__(self, landscape: Landscape, class_names: list[str] | None = None):
        self.landscape = landscape
        self.fig, (self._ax, self._ax1) = _draw(landscape, class_names)
        self._rings = (_ring(self._ax, 13, animated=True), _ring(self._ax1, 11, animated=True))
        self.fig.canvas.draw()
        self._background = self.fig.canvas.copy_from_bbox(self.fig.bbox)

    def render(self, step: int | None = None) -> np.ndarray:
        """(H, W, 3) uint8 image of the figure with the ring at `step` (None: no ring)."""
        L, canvas = self.landscape, self.fig.canvas
        step = _check_step(step, len(L.path_xy))
        canvas.restore_region(self._background)
        if step is not None:
            self._rings[0].set_data([L.path_xy[step, 0]], [L.path_xy[step, 1]])
            self._rings[1].set_data([L.path_steps[step]], [L.path_energy[step]])
            self._ax.draw_artist(self._rings[0])
            self._ax1.draw_artist(self._rings[1])
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()

    def close(self) -> None:
        close_figure(self.fig)

    def __enter__(self) -> "LandscapeRenderer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _draw(L: Landscape, class_names: list[str] | None):
    """The static part of the landscape figure; returns (fig, (plane axes, path axes))."""
    names = list(class_names) if class_names is not None else L.class_names
    fig = new_figure(11.0, 4.6)
    ax, ax1 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.15, 1]})
    da = (L.alphas[1] - L.alphas[0]) / 2
    db = (L.betas[1] - L.betas[0]) / 2
    extent = (L.alphas[0] - da, L.alphas[-1] + da, L.betas[0] - db, L.betas[-1] + db)
    im = ax.imshow(L.values, origin="lower", extent=extent, cmap=ENERGY_CMAP, aspect="auto",
                   interpolation="bilinear")
    if np.ptp(L.values) > 0:
        ax.contour(L.alphas, L.betas, L.values, levels=8, colors="white", linewidths=0.5, alpha=0.5)
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    cb.set_label(f"energy {L.energy_label} — lower is more typical")

    x, y = L.path_xy[:, 0], L.path_xy[:, 1]
    ax.plot(x, y, "-", color="white", lw=1.5, zorder=3)
    ax.plot(x, y, "o", color="white", ms=3, zorder=3)
    ax.plot(x[0], y[0], "o", ms=9, mfc="#2ca02c", mec="black", zorder=4,
            label=f"start x_0 ({names[L.source]})")
    ax.plot(x[-1], y[-1], "*", ms=14, mfc="#ff7f0e", mec="black", zorder=4,
            label=f"end x_T (toward {names[L.target]})")
    ax.legend(loc="upper left", fontsize=8, framealpha=0.8)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel(f"first direction: {L.u_label} (L2)")   # not always x_T - x_0 (`u_label`)
    ax.set_ylabel("second direction (L2)")
    off_plane = float(L.residual.max()) if len(L.residual) else 0.0
    ax.set_title(f"{L.energy_label} on a plane through x_0\nsecond direction: {L.v_label}; "
                 f"path off-plane ≤ {off_plane:.2g}", fontsize=9)

    ax1.plot(L.path_steps, L.path_energy, "-o", ms=3, color="#1f77b4")
    ax1.set_xlabel("PGD step")
    ax1.set_ylabel(f"energy {L.energy_label}")
    ax1.set_title("energy along the path", fontsize=9)
    ax1.grid(alpha=0.3)
    fig.tight_layout()
    return fig, (ax, ax1)

"""The training loop shared by both stages: devices, DDP, EMA, LR schedule, resumable state,
signals, non-finite guard, logging and periodic evaluation.

A stage object supplies `loss(log) -> (loss, logs)`, `after_step(logs)` and its own state; this
file does everything around it, identically for stage 1 and stage 2.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm

from ..checkpoint import save_model
from ..loading import load_model
from ..models import Classifier, build_model
from ..runtime import resolve_device, use_autocast
from .config import ConfigError, TrainConfig
from .data import build_streams, load_train_val
from .stage1 import AdversarialTraining
from .stage2 import DualAdversarialTraining

STAGES = {"stage1": AdversarialTraining, "stage2": DualAdversarialTraining}
STATE_FILE = "state.pt"


class TrainingError(RuntimeError):
    pass


class Interrupted(SystemExit):
    """Raised after a SIGTERM/SIGINT once the state is saved; exit code 128 + signal."""


# ---------------------------------------------------------------- setup

def _distributed() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); initialises the process group under torchrun."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))


def _device(spec: str, local_rank: int) -> torch.device:
    device = resolve_device(spec, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return device


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier of optim.lr at `step` (0-based): warm-up, then the chosen schedule."""
    o = cfg.optim
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    total = max(1, cfg.steps - o.warmup_steps)
    t = min(1.0, (step - o.warmup_steps) / total)
    lo = o.final_lr_fraction
    if o.schedule == "constant":
        return 1.0
    if o.schedule == "cosine":
        return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t))
    if o.schedule == "onecycle":  # linear anneal after the warm-up peak
        return lo + (1 - lo) * (1 - t)
    return 0.1 ** sum(t >= m for m in o.step_milestones)


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas))
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0)


class EMA:
    """Exponential moving average of weights, decay min(decay, (1+n)/(10+n)) (METHOD §3.5)."""

    def __init__(self, model: Classifier, decay: float):
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        for e, p in zip(self.model.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.lerp_(p, 1 - d)
            else:
                e.copy_(p)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])


def _initial_model(cfg: TrainConfig, class_names: list[str], device: torch.device) -> Classifier:
    if cfg.model.init:
        model = load_model(cfg.model.init, device="cpu")
        if model.config["num_classes"] != len(class_names):
            raise ConfigError(f"model.init has {model.config['num_classes']} classes, the data {len(class_names)}")
        model.config["class_names"] = list(class_names)
    else:
        model = build_model(cfg.model.arch, num_classes=len(class_names), image_size=cfg.data.image_size,
                            class_names=list(class_names))
    model.freeze_bn(cfg.stage == "stage2")
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


# ---------------------------------------------------------------- state on disk

def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _gather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


class Trainer:
    """Owns one run directory: `state.pt` (resumable), `metrics.jsonl`, `final/`, `best/`, PNGs."""

    def __init__(self, cfg: TrainConfig, resume: bool = False):
        self.cfg = cfg
        self.rank, self.world, local_rank = _distributed()
        if cfg.batch_size % self.world:
            raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by {self.world} ranks")
        if self.world > 1 and cfg.stage == "stage2" and not cfg.fused_forward:
            raise ConfigError("fused_forward=false (the official-order reference) runs single-process only")
        self.device = _device(cfg.device, local_rank)
        self.autocast = use_autocast(cfg.autocast, self.device)
        self.out = Path(cfg.out_dir)
        torch.manual_seed(cfg.seed + self.rank)

        train_set, self.val_set = load_train_val(cfg)
        self.class_names = list(train_set.class_names)
        self.module = _initial_model(cfg, self.class_names, self.device)
        self.ema = EMA(self.module, cfg.ema_decay)
        model: nn.Module = self.module
        if cfg.compile:
            model = torch.compile(model)
        if self.world > 1:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False)
        self.model = model
        self.optimizer = _optimizer(cfg, self.module)
        self.streams = build_streams(cfg, train_set, self.device, self.rank, self.world)
        self.stage = STAGES[cfg.stage](cfg, self.module, self.model, self.streams, self.autocast)
        self.step = 0
        self.best: dict[str, Any] = {"metric": cfg.best_metric, "value": None, "step": None}
        if resume:
            self._load_state()
        elif self.rank == 0 and (self.out / STATE_FILE).exists():
            raise ConfigError(f"{self.out} already holds a run; pass --resume to continue it or pick another out_dir")
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "run_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    # -- resumable state
    def _save_state(self) -> None:
        ranks = _gather({"rng": _rng_state(), "streams": {k: s.state_dict() for k, s in self.streams.items()}},
                        self.world)
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            _atomic_save({
                "step": self.step, "config": self.cfg.to_dict(), "world_size": self.world,
                "model": self.module.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "stage": self.stage.state_dict(),
                "best": self.best, "ranks": ranks,
            }, self.out / STATE_FILE)
        if self.world > 1:
            dist.barrier()

    def _load_state(self) -> None:
        path = self.out / STATE_FILE
        if not path.exists():
            raise ConfigError(f"--resume: no {STATE_FILE} in {self.out}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.module.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.stage.load_state_dict(state["stage"])
        self.step, self.best = int(state["step"]), state["best"]
        if state["world_size"] == self.world:
            mine = state["ranks"][self.rank]
            _set_rng_state(mine["rng"])
            for k, s in self.streams.items():
                s.load_state_dict(mine["streams"][k])
        else:
            print(f"warning: resuming {state['world_size']}-rank state on {self.world} ranks: "
                  "data order and RNG continue from fresh seeds")

    # -- the loop
    def fit(self) -> Path:
        cfg = self.cfg
        stop: list[int] = []
        handlers = {s: signal.signal(s, lambda signum, frame: stop.append(signum))
                    for s in (signal.SIGTERM, signal.SIGINT)} if self._main_thread() else {}
        bar = tqdm(total=cfg.steps, initial=self.step, disable=self.rank != 0, unit="step",
                   desc=cfg.stage, dynamic_ncols=True)
        log_file = (self.out / "metrics.jsonl").open("a") if self.rank == 0 else None
        t_last, step_last = time.perf_counter(), self.step
        try:
            while self.step < cfg.steps:
                self._set_lr()
                log = (self.step + 1) % cfg.log_every == 0 or self.step == 0
                loss, logs = self.stage.loss(log)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"non-finite loss ({loss.item()}) at step {self.step + 1}; stopping. "
                        f"The last good state is kept in {self.out / STATE_FILE}.")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.ema.update(self.module)
                logs.update(self.stage.after_step(logs))
                self.step += 1
                bar.update(1)
                if log and log_file is not None:
                    now = time.perf_counter()
                    ips = cfg.batch_size * (self.step - step_last) / max(now - t_last, 1e-9)
                    t_last, step_last = now, self.step
                    record = {"step": self.step, "loss": loss.item(), "lr": self.optimizer.param_groups[0]["lr"],
                              "images_per_s": ips, **{k: _scalar(v) for k, v in logs.items()}}
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                    bar.set_postfix({k: f"{record[k]:.3g}" for k in ("loss", "T", "adv_auc", "images_per_s")
                                     if k in record})
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                    self.evaluate()
                if self.step % cfg.ckpt_every == 0 or stop:
                    self._save_state()
                if stop:
                    raise Interrupted(128 + stop[0])
            self._save_state()
            self.evaluate()
            final = self.export("final")
            if self.rank == 0:
                from .curves import plot_curves
                plot_curves(self.out / "metrics.jsonl", self.out / "curves.png")
            return final
        except Interrupted:
            if self.rank == 0:
                bar.write(f"interrupted: state saved at step {self.step} in {self.out / STATE_FILE}; "
                          "continue with --resume")
            raise
        finally:
            bar.close()
            if log_file is not None:
                log_file.close()
            for s, h in handlers.items():
                signal.signal(s, h)

    @staticmethod
    def _main_thread() -> bool:
        import threading
        return threading.current_thread() is threading.main_thread()

    def _set_lr(self) -> None:
        lr = self.cfg.optim.lr * lr_factor(self.cfg, self.step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    # -- evaluation and export (rank 0; EMA weights)
    def evaluate(self) -> dict[str, Any] | None:
        metrics = None
        if self.rank == 0:
            from .periodic_eval import evaluate_run
            metrics = evaluate_run(self.cfg, self.ema.model, self.val_set, self.out, self.step, self.autocast)
            with (self.out / "eval.jsonl").open("a") as f:
                f.write(json.dumps({"step": self.step, **metrics}) + "\n")
            value = metrics.get(self.cfg.best_metric)
            if value is not None and (self.best["value"] is None or value > self.best["value"]):
                self.best.update(value=value, step=self.step)
                self.export("best", metrics)
        if self.world > 1:
            dist.barrier()
        return metrics

    def export(self, name: str, metrics: dict[str, Any] | None = None) -> Path:
        """Save the EMA model as a checkpoint dir (config.json + model.safetensors) with its energy quantiles."""
        path = self.out / name
        if self.rank == 0:
            from .periodic_eval import energy_statistics
            model = self.ema.model
            model.config["energy_quantiles"] = energy_statistics(model, self.val_set, self.autocast)
            model.config["training"] = {"stage": self.cfg.stage, "step": self.step,
                                        **({"T": self.stage.curriculum.T} if self.cfg.stage == "stage2" else {}),
                                        **({"validation": metrics} if metrics else {})}
            save_model(model, path)
        return path


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, torch.Tensor) else v


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Run (or resume) a training run and return the final checkpoint dir."""
    return Trainer(cfg, resume).fit()

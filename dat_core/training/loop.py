"""The training loop shared by both stages: devices, DDP, EMA, LR schedule, resumable state,
signals, non-finite guard, logging and periodic evaluation.

A stage object supplies `loss(log) -> (loss, logs)`, `watch` (the step's logits and AUCs, checked
for non-finite values), `after_step(logs)` and its own state; this file does everything around it,
identically for stage 1 and stage 2. Under torchrun the ranks decide together, once per step,
whether to stop (a signal to any rank, a non-finite value on any rank, a failed write), so they
save once and exit with the same code (see `distributed`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..checkpoint import save_model
from ..data.seeds import NOISE_KINDS, check_seeds
from ..files import write_text
from ..logs import get_logger, progress_bar
from ..runtime import use_autocast
from ..signals import is_main_thread
from . import distributed
from .config import ConfigError, TrainConfig
from .data import build_streams, load_train_val, stage_ood_seeds
from .errors import Interrupted, NonFiniteError, StateError, StorageError, TrainingError, interrupt_now
from .initial import initial_model, training_device
from .optim import EMA, load_optimizer_state, lr_factor, make_optimizer
from .stage1 import AdversarialTraining
from .stage2 import DualAdversarialTraining
from .state import (
    LOGS,
    STATE_FILE,
    alternative,
    atomic_save,
    check_resume_config,
    check_resume_data,
    claim_run_dir,
    data_fingerprint,
    export_step,
    keep_position,
    log_sizes,
    prepare_run_dir,
    read_state,
    refuse_fresh_run,
    restored_best,
    rng_state,
    set_rng_state,
    storage_error,
    truncate_logs,
    writes,
)
from .tracking import Mirror, check_tracker

logger = get_logger(__name__)
STAGES = {"stage1": AdversarialTraining, "stage2": DualAdversarialTraining}
__all__ = ["Trainer", "train", "lr_factor", "EMA", "STATE_FILE", "TrainingError", "NonFiniteError",
           "StorageError", "StateError", "Interrupted"]


class Trainer:
    """Owns one run directory: `state.pt` (resumable), `metrics.jsonl`, `eval.jsonl`, `final/`, `best/`, PNGs."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, allow_config_change: bool = False,
                 track: str | None = None):
        self.cfg, self.track = cfg, track
        check_tracker(track)  # every rank, before any collective: a missing package stops them all alike
        self.rank, self.world, local_rank = distributed.init()
        for bad, why in ((cfg.batch_size % self.world, f"batch_size {cfg.batch_size} is not divisible by {self.world} "
                          "ranks"), (self.world > 1 and cfg.stage == "stage2" and not cfg.fused_forward,
                                     "fused_forward=false (the official-order reference) runs single-process only")):
            if bad:   # every rank finds it alike: rank 0 says it for all
                error = ConfigError(why)
                error.shared = self.world > 1
                raise error
        self.out = Path(cfg.out_dir)
        self.held = contextlib.ExitStack()   # the run directory, claimed by rank 0 until fit() ends
        if not resume or self.out.is_dir():
            distributed.rank0(lambda: claim_run_dir(self.out, self.held), self.rank, self.world)
        try:
            self._setup(cfg, resume, allow_config_change, track, local_rank)
        except BaseException:
            self.held.close()
            raise

    def _setup(self, cfg: TrainConfig, resume: bool, allow_config_change: bool, track: str | None,
               local_rank: int) -> None:
        saved = None
        if resume:
            saved = read_state(self.out)
            self.changes = check_resume_config(saved, cfg, self.world, allow_config_change, self.out)
            if self.changes:
                logger.warning("resuming %s with a changed config: %s", self.out, "; ".join(self.changes))
        else:
            refuse_fresh_run(self.out)
        self.step, self.saved_step = (saved["step"], saved["step"]) if saved else (0, None)
        self.finished = bool(saved and saved.get("finished") and saved["step"] >= cfg.steps)
        if self.finished:
            return
        self.device = training_device(cfg.device, local_rank)  # before any collective: NCCL talks through this GPU
        distributed.rank0(lambda: prepare_run_dir(self.out), self.rank, self.world)
        self.autocast = use_autocast(cfg.autocast, self.device)
        torch.manual_seed(cfg.seed + self.rank)

        # a seed changed on resume changes the data order, never which images are held out
        data_seed = int(saved.get("data_seed", saved["config"].get("seed", cfg.seed))) if saved else cfg.seed
        self.data_seed = data_seed   # saved with every state: the next resume draws the same, whatever seed is
        self.train_set, self.val_set = load_train_val(cfg, seed=data_seed)
        self.data_sha256 = data_fingerprint(self.train_set, self.val_set)
        ood, self.ood_images = stage_ood_seeds(cfg, data_seed)   # the OOD hold-out is drawn from data.ood
        if saved:
            check_resume_data(saved, self.data_sha256, self.ood_images, self.out)
        self.class_names = list(self.train_set.class_names)
        if cfg.sample_grid:  # the first grid is drawn at the first evaluation: a bad seed kind fails now
            try:
                check_seeds(cfg.sample_seeds, self.class_names)
            except (ValueError, FileNotFoundError) as e:
                raise ConfigError(f"sample_seeds={cfg.sample_seeds}: {e}") from None
        try:
            self.module = initial_model(cfg, self.class_names, self.device, saved and saved.get("model_config"))
        except (KeyError, TypeError, AttributeError) as e:  # only a malformed saved model_config gets here
            raise StateError(f"--resume: the model in {self.out / STATE_FILE} cannot be rebuilt ({e!r}); "
                             f"{alternative(self.out)}") from None
        record = self.module.config.get("training")   # the init's (a resumed run: as it began)
        self.inherited = record if isinstance(record, dict) else {}
        self.ema = EMA(self.module, cfg.ema_decay)
        model: nn.Module = self.module
        if cfg.compile:
            model = torch.compile(model)
        if self.world > 1:
            with warnings.catch_warnings():  # rank-local BN buffers are the point of broadcast_buffers=False
                warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
                model = nn.parallel.DistributedDataParallel(
                    model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                    broadcast_buffers=False)
        self.model = model
        self.optimizer = make_optimizer(cfg, self.module)
        self.streams = build_streams(cfg, self.train_set, self.device, self.rank, self.world, data_seed, ood)
        self.stage = STAGES[cfg.stage](cfg, self.module, self.model, self.streams, self.autocast)
        self.best: dict[str, Any] = {"metric": cfg.best_metric, "value": None, "step": None}
        self.log_sizes = dict.fromkeys(LOGS, 0)   # a fresh run's logs start empty (a run killed before its
        # first state.pt left rows no state covers); a resumed one's are cut back to its saved step (_restore)
        self.log_file = None
        self.mirror = Mirror(None)  # rank 0 opens the tracker with the logs
        self.pending_error: StorageError | None = None
        self.stop_signals: list[int] = []  # SIGTERM/SIGINT received (train() hands in those of the set-up)
        if saved:
            self._restore(saved)
            # exported after the state was saved? Rank 0 decides for all, before anything is deleted: a rank that
            # looked on its own after rank 0's delete saw nothing stale and skipped the collective below (a hang)
            stale = self.rank == 0 and self.best.get("step") != export_step(self.out / "best")
            if distributed.gather(stale, self.world)[0]:
                logger.warning("best/ is not the one %s records (a stop after an evaluation): the best weights "
                               "are chosen again from here on", STATE_FILE)
                distributed.rank0(lambda: shutil.rmtree(self.out / "best", ignore_errors=True), self.rank, self.world)
                self.best.update(value=None, step=None)

    # -- resumable state
    def _save_state(self, finished: bool = False) -> None:
        mine = {"rng": rng_state(), "streams": {k: s.state_dict() for k, s in self.streams.items()},
                "buffers": {n: b.detach().cpu().clone() for n, b in self.module.named_buffers()},
                "stage": getattr(self.stage, "rank_state_dict", dict)()}
        ranks = distributed.gather(mine, self.world)  # each rank's own RNG, data position and BN statistics

        def write():
            if self.pending_error is not None:
                raise self.pending_error
            atomic_save({
                "step": self.step, "finished": finished, "config": self.cfg.to_dict(), "world_size": self.world,
                "model_config": self.module.config, "model": self.module.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "stage": self.stage.state_dict(), "best": self.best,
                "ranks": ranks, "logs": log_sizes(self.out), "data_sha256": self.data_sha256,
                "ood_images": self.ood_images, "data_seed": self.data_seed,
            }, self.out / STATE_FILE, keep_previous=True)
        distributed.rank0(write, self.rank, self.world)
        self.saved_step = self.step
        self.mirror.commit()  # the tracker gets the rows this state covers, never rows a resume repeats

    def _restore(self, saved: dict[str, Any]) -> None:
        path = self.out / STATE_FILE
        try:
            self.module.load_state_dict(saved["model"])
            self.ema.load_state_dict(saved["ema"])
            load_optimizer_state(self.optimizer, saved["optimizer"])
            self.stage.load_state_dict(saved["stage"])
            self.best = restored_best(saved["best"], self.cfg.best_metric)
            if saved["world_size"] == self.world:
                mine = saved["ranks"][self.rank]
                set_rng_state(mine["rng"])
                for k, s in self.streams.items():
                    s.load_state_dict(mine["streams"][k])
                with torch.no_grad():
                    for name, buf in self.module.named_buffers():
                        if name in mine.get("buffers", {}):
                            buf.copy_(mine["buffers"][name])
                if hasattr(self.stage, "load_rank_state_dict"):
                    self.stage.load_rank_state_dict(mine.get("stage", {}))
            else:   # positions are global (every rank's is the same); generators, chains, BN statistics per rank
                for k, s in self.streams.items():
                    s.load_state_dict(keep_position(saved["ranks"][0]["streams"][k], s.state_dict()))
                logger.warning("resuming a %d-rank state on %d ranks: the data continue from the saved batch; the "
                               "augmentation and noise RNGs, per-rank BatchNorm statistics and persistent chains "
                               "start afresh", saved["world_size"], self.world)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
            cause = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            raise StateError(f"--resume: {path} does not fit this run ({cause}); {alternative(self.out)}") from None
        self.log_sizes = dict(saved.get("logs") or {})

    # -- the loop
    def fit(self) -> Path:
        try:
            return self._fit()
        finally:
            self.held.close()

    def _fit(self) -> Path:
        cfg = self.cfg
        if self.finished:
            logger.info("the run in %s is finished (step %d of %d); nothing to do. Its EMA weights are in %s; to "
                        "train longer, raise steps and pass --allow-config-change", self.out, self.step, cfg.steps,
                        self.out / "final")
            return self.out / "final"
        stop = self.stop_signals
        handlers = {s: signal.signal(s, lambda signum, frame: stop.append(signum))
                    for s in (signal.SIGTERM, signal.SIGINT)} if is_main_thread() else {}
        bar = progress_bar(total=cfg.steps, initial=self.step, disable=self.rank != 0, unit="step",
                           desc=cfg.stage, dynamic_ncols=True)
        self._timer = (time.perf_counter(), self.step)
        try:
            distributed.rank0(writes(self._open_logs, self.out), self.rank, self.world)
            while self.step < cfg.steps:
                self._set_lr()
                log = (self.step + 1) % cfg.log_every == 0 or self.step == 0
                loss, logs = self.stage.loss(log)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.ema.update(self.module)
                logs.update(self.stage.after_step(logs))
                watched = {"loss": loss.detach(), **self.stage.watch}
                flags = distributed.agree([max(stop, default=0), float(self.pending_error is not None),
                                           *(~torch.isfinite(v).all() for v in watched.values())],
                                          self.world, self.device)
                bad = [name for name, f in zip(watched, flags[2:]) if f]
                if bad:  # every rank raises the same error (rank 0 reports it)
                    error = self._nonfinite(bad)
                    error.shared = self.world > 1
                    raise error
                if flags[1]:  # rank 0 could not append to metrics.jsonl
                    distributed.rank0(self._raise_pending, self.rank, self.world)
                self.step += 1
                bar.update(1)
                if log:   # the global batch's numbers (every rank takes part in the mean)
                    self._log(distributed.mean({"loss": loss.detach(), **logs}, self.world, self.device), bar)
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                    self.evaluate()
                if self.step % cfg.ckpt_every == 0 or flags[0] or self.step == cfg.steps:
                    self._save_state()
                if flags[0]:
                    raise Interrupted(128 + int(flags[0]))
            return self._finish()
        except BaseException as e:
            if isinstance(e, Interrupted):
                logger.warning("interrupted (exit %d): state saved at step %d in %s; continue with --resume", e.code,
                               self.step, self.out / STATE_FILE)
            if self.world > 1:  # on the way out: torchrun's SIGTERM to a slower rank must not change its exit code
                handlers = {s: signal.SIG_IGN for s in handlers}
            raise
        finally:
            bar.close()
            if self.log_file is not None:
                try:
                    self.log_file.close()
                except OSError:  # already reported (every line was flushed when written)
                    pass
            self.mirror.close()
            for stream in self.streams.values():  # join the prefetch threads: none may outlive the run
                stream.close()
            for s, h in handlers.items():
                signal.signal(s, h)

    def _nonfinite(self, names: list[str]) -> NonFiniteError:
        if self.saved_step is None:
            good = (f"none (no {STATE_FILE} was written yet; the first was due at step "
                    f"{min(self.cfg.ckpt_every, self.cfg.steps)})")
        else:
            good = f"{self.out / STATE_FILE} (step {self.saved_step})"
        return NonFiniteError(f"non-finite {', '.join(names)} at step {self.step + 1}; last good checkpoint: {good}")

    def _raise_pending(self) -> None:
        raise self.pending_error

    def _open_logs(self) -> None:
        truncate_logs(self.out, self.log_sizes)
        write_text(self.out / "run_config.json", json.dumps(self.cfg.to_dict(), indent=2))
        self.log_file = (self.out / "metrics.jsonl").open("a")
        self.mirror = Mirror.open(self.track, self.out, self.cfg.to_dict())

    def _log(self, logs: dict[str, Any], bar: Any) -> None:
        if self.log_file is None or self.pending_error is not None:
            return
        now, (t_last, step_last) = time.perf_counter(), self._timer
        ips = self.cfg.batch_size * (self.step - step_last) / max(now - t_last, 1e-9)
        self._timer = (now, self.step)
        logs = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in logs.items()}
        record = {"step": self.step, "loss": logs.pop("loss"), "lr": self.optimizer.param_groups[0]["lr"],
                  "images_per_s": ips, **logs}
        try:
            self.log_file.write(json.dumps(record) + "\n")
            self.log_file.flush()
        except OSError as e:  # every rank hears of it at the next step's agreement
            self.pending_error = storage_error(self.out / "metrics.jsonl", e)
        else:
            self.mirror.train_row(record)
        bar.set_postfix({k: f"{record[k]:.3g}" for k in ("loss", "T", "adv_auc", "images_per_s") if k in record})

    def _finish(self) -> Path:
        """Final evaluation and export of the EMA weights; then the state says the run is finished. The last step
        is saved: a SIGTERM/SIGINT now stops at once (one process; fit() puts the caller's handlers back)."""
        if self.world == 1 and is_main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                signal.signal(s, interrupt_now)
            if self.stop_signals:
                raise Interrupted(128 + max(self.stop_signals))
        self.evaluate(final=True)
        self._save_state(finished=True)
        return self.out / "final"

    def _set_lr(self) -> None:
        lr = self.cfg.optim.lr * lr_factor(self.cfg, self.step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def _provenance(self) -> dict[str, Any]:
        """What a checkpoint says of its training images: the carve-outs it (and the model it started from) never
        trained on, and whether it saw images beyond the dataset (None: its init does not say)."""
        d = self.cfg.data
        mine = {"split": d.train_split, "val_size": d.val_size, "seed": self.data_seed,
                "val_sha256": data_fingerprint(self.val_set)}
        theirs = self.inherited.get("carve_outs")   # an init's record, read like any input
        theirs = [c for c in theirs if isinstance(c, dict) and c != mine] if isinstance(theirs, list) else []
        carve_outs = [mine, *theirs]
        own = self.cfg.stage == "stage2" and d.ood not in NOISE_KINDS
        inherited = self.inherited.get("additional_data") if self.cfg.model.init else False
        inherited = inherited if isinstance(inherited, bool) else None
        return {"carve_outs": carve_outs, "additional_data": True if own or inherited is True else inherited}

    # -- evaluation and export (rank 0; EMA weights)
    def evaluate(self, final: bool = False) -> dict[str, Any] | None:
        """Validation metrics of the EMA weights into eval.jsonl; best/ when they improve; at the end final/
        (and, without a validation split, best/ = the last EMA weights)."""
        def work() -> dict[str, Any]:
            from .periodic_eval import evaluate_run
            metrics = evaluate_run(self.cfg, self.ema.model, self.val_set, self.out, self.step, self.autocast)
            row = {"step": self.step, **metrics}
            with (self.out / "eval.jsonl").open("a") as f:
                f.write(json.dumps(row) + "\n")
            self.mirror.eval_row(row)
            value = metrics.get(self.cfg.best_metric)
            if value is not None and (self.best["value"] is None or value > self.best["value"]):
                self.best.update(value=value, step=self.step)
                self.export("best", metrics)
            if final:
                self.export("final", metrics)
                if not len(self.val_set):  # model selection needs validation data: keep the last weights
                    self.best.update(metric="last", value=None, step=self.step)
                    self.export("best", metrics)
                from .curves import plot_curves
                plot_curves(self.out / "metrics.jsonl", self.out / "curves.png")
            return metrics
        return distributed.rank0(writes(work, self.out), self.rank, self.world)

    def export(self, name: str, metrics: dict[str, Any] | None = None) -> Path:
        """Save the EMA model as a checkpoint dir (config.json + model.safetensors) with its energy quantiles
        (of the validation split; of training images when there is none). Rank 0 only."""
        from .periodic_eval import energy_statistics, spread_subset
        model = self.ema.model
        reference = self.val_set if len(self.val_set) else spread_subset(self.train_set, max(self.cfg.eval_size, 100))
        model.config["energy_quantiles"] = energy_statistics(model, reference, self.autocast)
        selection = f"best {self.cfg.best_metric} on validation" if len(self.val_set) else "last (no validation)"
        model.config["training"] = {"stage": self.cfg.stage, "step": self.step, "selection": selection,
                                    **self._provenance(),
                                    **({"T": self.stage.curriculum.T} if self.cfg.stage == "stage2" else {}),
                                    **({"validation": metrics} if metrics else {})}
        # written whole (`save_model`): a stop between its two files left new weights beside an old config
        return save_model(model, self.out / name)


def train(cfg: TrainConfig, resume: bool = False, allow_config_change: bool = False,
          track: str | None = None) -> Path:
    """Run (or resume) a training run and return the final checkpoint dir (`track`: a tracker from
    `tracking.TRACKERS` that gets a copy of every logged row). A SIGTERM/SIGINT that arrives while the
    run is being set up (data loading can take minutes) stops it after its first step."""
    stop: list[int] = []
    handlers = {s: signal.signal(s, lambda signum, frame: stop.append(signum))
                for s in (signal.SIGTERM, signal.SIGINT)} if is_main_thread() else {}
    try:
        trainer = Trainer(cfg, resume, allow_config_change, track)
        trainer.stop_signals = stop
        return trainer.fit()
    except BaseException:
        if distributed.is_multi_process():  # on the way out: torchrun's SIGTERM to a slower rank must not
            handlers = {s: signal.SIG_IGN for s in handlers}  # turn its exit code into a death by signal
        raise
    finally:
        distributed.shutdown()
        for s, h in handlers.items():
            signal.signal(s, h)

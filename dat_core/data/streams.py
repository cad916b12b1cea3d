"""Batch streams: an endless, resumable, DDP-aware sequence of augmented batches from a dataset."""

from __future__ import annotations

import math
import queue
import threading
from typing import Callable, Iterator

import numpy as np
import torch

from .augment import AUGMENTATIONS
from .datasets import ImageDataset

__all__ = ["BatchStream", "batches"]

PREFETCH_THREAD = "batch-prefetch"
"""The name of a stream's background thread; the training loop closes its streams (joins them) before it returns:
a daemon thread still inside a torch op when the interpreter exits aborts the process ("terminate called
without an active exception"), which failed a finished DDP rank once."""


ORDER = 2
"""The shuffle a stream's state records: 2 = `epoch_seed`. States without it (saved before) keep `seed + epoch`, so
their runs resume exactly."""


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's permutation, mixed from (seed, epoch): with `seed + epoch`, streams of seeds s and
    s+1 (stage 2's clf and real streams) replayed each other's epochs one apart, and so did runs of nearby seeds."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0]) >> 1   # int first: numpy 1.x


class BatchStream:
    """Infinite, resumable stream of `(x, labels)` batches: x float [0,1] NCHW on `device`.

    Global-batch semantics: each epoch's permutation is seeded by the pair (seed, epoch), mixed
    (`epoch_seed`; all DDP ranks agree); global batch b is `perm[b*B:(b+1)*B]` and rank r takes every
    world_size-th sample of it, so ranks see B // world_size distinct images that together make the global batch.
    `state_dict()` holds the next batch's position (`epoch`, `index` = batch within the epoch) and
    the augmentation RNG, so a stream restored from it yields exactly the batches that would have
    followed. With `num_workers > 0` a background thread assembles up to that many batches ahead
    (torch ops release the GIL, so this overlaps with the training step); every pipeline draws from the
    stream's own generator alone, so the thread changes no batch.
    """

    def __init__(self, dataset: ImageDataset, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 device: str | torch.device = "cpu",
                 augment: str | Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                 start_epoch: int = 0, start_index: int = 0):
        if batch_size < 1 or world_size < 1 or batch_size % world_size or not 0 <= rank < world_size:
            raise ValueError(f"need batch_size >= 1 divisible by world_size >= 1 and 0 <= rank < world_size, "
                             f"got {batch_size}, {world_size}, rank {rank}")
        if seed < 0:   # the shuffle's SeedSequence takes no negative seed: it failed at the first batch
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:  # the prefetch thread's current
            self.device = torch.device("cuda", torch.cuda.current_device())  # device is not the caller's
        if isinstance(augment, str) and augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {augment!r}; choose one of {sorted(AUGMENTATIONS)}")
        self.augment = AUGMENTATIONS[augment] if isinstance(augment, str) else augment
        n = len(dataset)
        self.batches_per_epoch = n // batch_size if drop_last else math.ceil(n / batch_size)
        if self.batches_per_epoch == 0:
            raise ValueError(f"dataset of {n} images is smaller than one batch of {batch_size}")
        if not drop_last and world_size > 1 and n % batch_size:
            raise ValueError(f"drop_last=False with {world_size} ranks: the last batch of {n % batch_size} images "
                             f"cannot be split into {world_size} equal parts (some ranks would get none)")
        if start_epoch < 0 or not 0 <= start_index < self.batches_per_epoch:
            raise ValueError(f"start_epoch {start_epoch} and start_index {start_index}: need start_epoch >= 0 and "
                             f"0 <= start_index < {self.batches_per_epoch} (batches per epoch)")
        generator = torch.Generator().manual_seed(seed * 1_000_003 + rank)  # rank-distinct augmentations
        self._state = {"epoch": start_epoch, "index": start_index, "generator": generator.get_state()}
        self.order: int | None = ORDER   # None: a state saved before `epoch_seed` (its run keeps `seed + epoch`)
        self._perm: tuple[int, torch.Tensor] | None = None
        self._thread: threading.Thread | None = None

    @property
    def epoch(self) -> int:
        return self._state["epoch"]

    def state_dict(self) -> dict:
        """Position of the next batch: {"epoch", "index", "generator" (uint8 RNG state tensor), "order" (the
        shuffle, `ORDER`)}."""
        state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in self._state.items()}
        return state if self.order is None else {**state, "order": self.order}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`; a position past this stream's epoch (saved when an epoch held more
        batches) starts the next epoch."""
        self.close()
        epoch, index = int(state["epoch"]), int(state["index"])
        if epoch < 0 or index < 0:
            raise ValueError(f"a stream state at epoch {epoch}, batch {index}: neither may be negative")
        if index >= self.batches_per_epoch:   # saved with more batches per epoch: an empty batch, so start the next
            epoch, index = epoch + 1, 0
        self._state = {"epoch": epoch, "index": index, "generator": state["generator"].clone()}
        self.order = int(state["order"]) if "order" in state else None
        if self.order not in (None, ORDER):
            raise ValueError(f"a stream state of shuffle {self.order} (this version has {ORDER})")
        self._perm = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            n = len(self.dataset)
            seed = self.seed + epoch if self.order is None else epoch_seed(self.seed, epoch)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if self.shuffle else torch.arange(n)
            self._perm = (epoch, perm)
        return self._perm[1]

    def _produce(self, cursor: dict, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Assemble the batch at `cursor` and advance it (epoch rolls over after the last batch)."""
        start = cursor["index"] * self.batch_size
        idx = self._permutation(cursor["epoch"])[start:start + self.batch_size][self.rank::self.world_size]
        x, y = self.dataset.images[idx], self.dataset.labels[idx]
        if self.device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
        x = x.to(self.device, non_blocking=True).float().div_(255)
        y = y.to(self.device, non_blocking=True)
        if self.augment is not None:
            x = self.augment(x, generator)
        cursor["index"] += 1
        if cursor["index"] >= self.batches_per_epoch:
            cursor["epoch"], cursor["index"] = cursor["epoch"] + 1, 0
        return x, y

    def _snapshot_after(self, cursor: dict, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, dict]:
        x, y = self._produce(cursor, generator)
        return x, y, {**cursor, "generator": generator.get_state()}

    def _worker(self, cursor: dict, generator: torch.Generator, out: queue.Queue, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                item: object = self._snapshot_after(cursor, generator)
            except BaseException as e:  # handed to the consumer, which re-raises it
                item = e
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.num_workers <= 0:
            generator = torch.Generator()
            generator.set_state(self._state["generator"])
            x, y, self._state = self._snapshot_after(dict(self._state), generator)
            return x, y
        if self._thread is None:
            generator = torch.Generator()
            generator.set_state(self._state["generator"])
            self._queue, self._stop = queue.Queue(maxsize=self.num_workers), threading.Event()
            self._thread = threading.Thread(target=self._worker, daemon=True, name=PREFETCH_THREAD,
                                            args=(dict(self._state), generator, self._queue, self._stop))
            self._thread.start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        x, y, self._state = item
        return x, y

    def close(self) -> None:
        """Stop the prefetch thread (if any); the stream can still continue from its state."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None


def batches(dataset: ImageDataset, batch_size: int, **kwargs) -> BatchStream:
    """Shorthand for BatchStream(dataset, batch_size, **kwargs)."""
    return BatchStream(dataset, batch_size, **kwargs)

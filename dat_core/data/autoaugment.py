"""AutoAugment (Cubuk et al. 2019) with the CIFAR-10 policy, through kornia, seeded like our other augmentations.

The paper's classification batch (METHOD §3.2 `autoaugment_cutout`) applies the policy per image:
each image draws one of the 25 sub-policies, then each of its two operations fires with its
probability. kornia's `AutoAugment` draws one sub-policy per *batch*, so we draw the sub-policy of
every image from the stream's generator and run each of kornia's sub-policies on its images.

kornia samples its parameters from torch's global RNG. To keep a stream's batches a function of
its own generator (exact `--resume`, same batches on any device), the operations run under
`fork_rng` with the global CPU generator seeded from a number drawn from the stream's generator,
and the global state is restored afterwards. The global RNG is shared by all threads, so a stream
runs this pipeline on the consumer's thread (`MAIN_THREAD`), never in a prefetch thread.
"""

from __future__ import annotations

from functools import lru_cache

import torch

__all__ = ["autoaugment", "POLICIES"]

POLICIES = ("cifar10", "imagenet", "svhn")  # kornia's presets


@lru_cache(maxsize=None)
def _subpolicies(policy: str) -> tuple[torch.nn.Module, ...]:
    from kornia.augmentation.auto import AutoAugment  # ~1.7 s to import: only when the pipeline is used

    return tuple(AutoAugment(policy).children())


def autoaugment(x: torch.Tensor, generator: torch.Generator | None = None, policy: str = "cifar10") -> torch.Tensor:
    """AutoAugment `policy` on a float [0,1] NCHW batch, one sub-policy per image; geometric ops fill with 0."""
    if policy not in POLICIES:
        raise ValueError(f"unknown AutoAugment policy {policy!r}; choose one of {', '.join(POLICIES)}")
    subs = _subpolicies(policy)
    choice = torch.randint(len(subs), (x.shape[0],), generator=generator)
    seed = int(torch.randint(2 ** 62, (1,), generator=generator))
    out = x.clone()
    with torch.random.fork_rng(devices=[]):  # kornia samples on the CPU, whatever the images' device
        torch.default_generator.manual_seed(seed)
        for i in choice.unique().tolist():
            idx = (choice == i).nonzero().squeeze(1).to(x.device)
            out[idx] = subs[i](x[idx]).to(x.dtype)
    return out.clamp_(0, 1)

"""Data layer, audit 29: invalid sizes and stream arguments refused up front, DDP keep-last batches, boolean
subsets, empty seed draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dat_core.data import ImageDataset, load_image_folder, noise_seeds, seeds_for
from dat_core.data.seeds import ClassGaussians, SeedBank
from dat_core.data.streams import BatchStream


def _numbered(n: int = 25, classes: int = 5) -> ImageDataset:
    """n images whose pixels hold their index; labels cycle through `classes`."""
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(-1, 3, 2, 2).clone()
    return ImageDataset(images, torch.arange(n) % classes, [str(c) for c in range(classes)])


def _png_dir(root):
    for c in "ab":
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((10, 12, 3), 40 * i, dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.mark.parametrize("size", [0, -4, 2.5, True])
@pytest.mark.parametrize("lazy", [False, True])
def test_an_invalid_image_size_is_refused_before_any_file_is_read(tmp_path, size, lazy):
    """image_size=0 decoded every file, then blamed each one as unreadable ("none of the 6 images could be
    decoded"); lazily it gave a dataset of 0x0 images that failed at the first batch, naming a good file."""
    root = _png_dir(tmp_path / "pngs")
    with pytest.raises(ValueError, match="image_size must be"):
        load_image_folder(root, image_size=size, lazy=lazy, progress=False)


@pytest.mark.parametrize("kwargs", [dict(batch_size=-5), dict(batch_size=0), dict(world_size=0),
                                    dict(seed=-1), dict(start_index=5), dict(start_index=-1),
                                    dict(start_epoch=-1)])
def test_invalid_stream_arguments_are_refused_when_the_stream_is_made(kwargs):
    """batch_size=-5 gave batches of 20 images, 0 and world_size=0 a ZeroDivisionError, a negative seed failed at
    the first batch, and a start_index outside the epoch gave an empty batch."""
    with pytest.raises(ValueError):
        BatchStream(_numbered(), **{"batch_size": 5, **kwargs})


def test_keeping_the_last_partial_batch_never_leaves_a_ddp_rank_without_images():
    """25 images, batches of 8 on 4 ranks: the last global batch held 1 image, so 3 ranks got empty batches."""
    with pytest.raises(ValueError, match="drop_last"):
        BatchStream(_numbered(), 8, drop_last=False, world_size=4, rank=1)
    ranks = [BatchStream(_numbered(24), 8, drop_last=False, world_size=4, rank=r) for r in range(4)]
    assert all(len(next(s)[0]) == 2 for _ in range(4) for s in ranks)   # an even split keeps working
    single = BatchStream(_numbered(), 8, drop_last=False)
    assert [len(next(single)[0]) for _ in range(4)] == [8, 8, 8, 1]   # one rank keeps the last image


def test_a_state_past_the_end_of_an_epoch_resumes_at_the_next_epoch_not_with_an_empty_batch():
    stream = BatchStream(_numbered(), 5, seed=2)
    state = {**stream.state_dict(), "epoch": 3, "index": 7}   # saved with more images per epoch
    stream.load_state_dict(state)
    x, _ = next(stream)
    reference = BatchStream(_numbered(), 5, seed=2, start_epoch=4)
    assert len(x) == 5 and torch.equal(x, next(reference)[0])
    with pytest.raises(ValueError):
        stream.load_state_dict({**state, "index": -1})


@pytest.mark.parametrize("as_array", [False, True])
def test_a_boolean_mask_subsets_the_images_it_selects(as_array):
    """ImageDataset.subset read a mask as the indices 0 and 1 (images 0, 0, 1, 1 for the mask of 2, 3); the lazy
    dataset's subset read it as a mask."""
    ds = _numbered(4, 4)
    mask = ds.labels >= 2
    part = ds.subset(mask.numpy() if as_array else mask)
    assert part.labels.tolist() == [2, 3] and part.images[:, 0, 0, 0].tolist() == [2, 3]
    with pytest.raises(IndexError):
        ds.subset(torch.tensor([True, False]))   # a mask of another length is an error, not a guess


def test_a_lazy_dataset_refuses_a_mask_of_another_length(tmp_path):
    """LazyImages took a mask shorter than its files as a mask of their first images (the eager one refuses it)."""
    lazy = load_image_folder(_png_dir(tmp_path / "pngs"), image_size=4, lazy=True, progress=False)
    assert lazy.subset(lazy.labels == 1).labels.tolist() == [1, 1, 1]
    with pytest.raises(IndexError):
        lazy.subset(torch.tensor([False, True]))
    with pytest.raises(IndexError):
        lazy.images[torch.ones(7, dtype=torch.bool)]


def test_every_seed_kind_draws_an_empty_batch_for_no_targets(tmp_path):
    """seeds_for("bank", []) raised torch.cat's "expected a non-empty list of Tensors"; the noise kinds gave an
    empty batch."""
    bank = SeedBank(torch.zeros(5, 3, 8, 8, dtype=torch.uint8), {})
    assert bank.draw(0, 16, torch.Generator()).shape == (0, 3, 16, 16)
    for kind in ("uniform", "lowfreq"):
        assert seeds_for(kind, [], 16, torch.Generator()).shape == (0, 3, 16, 16)
    with pytest.raises(ValueError):
        bank.draw(-1, 16, torch.Generator())


@pytest.mark.parametrize("args", [(4, 0), (4, -2), (-1, 8), (4, 8, "lowfreq", 0, None, 0)])
def test_noise_seeds_of_no_pixels_are_refused(args):
    """noise_seeds(4, 0) gave four 0x0 images."""
    with pytest.raises(ValueError):
        noise_seeds(*args)


def test_a_gaussian_seed_of_a_negative_class_names_that_class():
    g = ClassGaussians(torch.zeros(2, 3 * 4), torch.eye(12).expand(2, 12, 12), ["a", "b"], 2)
    with pytest.raises(ValueError, match="class -1"):
        g.draw(torch.tensor([-1, 0]), 4, torch.Generator())

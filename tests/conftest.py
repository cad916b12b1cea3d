import os

import pytest
import torch

# Two cores: keep intra-op threads modest so parallel pytest workers and servers do not thrash.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_model():
    """A small WRN in eval mode with non-trivial BN statistics."""
    from dat_core import build_model

    torch.manual_seed(0)
    model = build_model("wrn-10-1")
    with torch.no_grad():
        model.train()
        for _ in range(3):
            model(torch.rand(16, 3, 32, 32))
    return model.eval()

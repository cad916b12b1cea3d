"""The Python API as a researcher calls it: a train-mode model left as it was, inputs in the forms the library
itself hands out, and clear errors (naming the parameter) for inputs it cannot take."""

import copy

import numpy as np
import pytest
import torch

import explain
from dat_core import build_model


@pytest.fixture()
def train_mode_model():
    torch.manual_seed(0)
    model = build_model("wrn-10-1")
    model.train()
    with torch.no_grad():   # BatchNorm statistics away from their initial values, so a read-out that uses
        model(torch.rand(8, 3, 32, 32))   # batch statistics differs from eval mode
    return model


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_no_call_moves_a_train_mode_models_batchnorm_statistics(train_mode_model):
    """alternatives and generate (record_every=0) read the final confidences with the model in its own (train)
    mode: its BatchNorm running statistics moved, and the confidences were of batch statistics, not the ones
    the PGD run saw (generate gave another p(target) with record_every=1 than with 0)."""
    model, before = train_mode_model, copy.deepcopy(train_mode_model)
    image = torch.rand(3, 32, 32)
    alts = explain.alternatives(model, image, 3, 2, steps=2, eps=1.0, autocast=False)
    assert _same_state(model, before) and model.training
    eval_copy = copy.deepcopy(before).eval()
    with torch.no_grad():
        expected = torch.softmax(eval_copy(torch.from_numpy(alts.images)), 1)[:, 3].numpy()
    np.testing.assert_allclose(alts.confidence, expected, atol=1e-5)
    plain = explain.generate(model, [3, 5], steps=2, autocast=False)
    recorded = explain.generate(model, [3, 5], steps=2, record_every=1, autocast=False)
    assert _same_state(model, before) and model.training
    np.testing.assert_allclose(plain.confidences, recorded.confidences, atol=1e-5)

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Spinning OpenMP threads stall badly when two processes share 2 cores (a test and the server or
# training subprocess it drives); passive waiting keeps the suite fast. Must precede `import torch`.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # app tests serve on loopback only: no telemetry calls
# A private upload cache: other Gradio apps on the machine share /tmp/gradio, where identical uploads land on one
# path, and delete them when they close (this failed benchmark requests once).
if "GRADIO_TEMP_DIR" not in os.environ:
    os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="dat-tests-gradio-")
    atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], ignore_errors=True)

import numpy as np
import pytest
import torch
from PIL import Image

# Two cores: keep intra-op threads modest so parallel pytest workers and servers do not thrash.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def warmed_wrn() -> torch.nn.Module:
    """wrn-10-1 in eval mode with non-trivial BN statistics (seeded)."""
    from dat_core import build_model

    torch.manual_seed(0)
    model = build_model("wrn-10-1")
    with torch.no_grad():
        model.train()
        for _ in range(3):
            model(torch.rand(16, 3, 32, 32))
    return model.eval()


@pytest.fixture
def tiny_model():
    """A fresh small WRN per test (tests may change its mode)."""
    return warmed_wrn()


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    """Class-folder dataset: colour-coded classes plus noise, train/ and test/ splits."""
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 8)):
        for c, col in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200)]):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                img = np.clip(np.array(col) + rng.normal(0, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i:03d}.png")
    ood = root / "ood"
    ood.mkdir()
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(ood / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    """A checkpoint of the toy data's three classes (wrn-10-1 at 16 px) for stage-2 runs to start from."""
    from dat_core import build_model, save_model

    torch.manual_seed(0)
    names = ["class0", "class1", "class2"]
    return save_model(build_model("wrn-10-1", num_classes=3, image_size=16, class_names=names).eval(),
                      tmp_path_factory.mktemp("init") / "stage1")


def uploaded(path: str | Path) -> str:
    """A file as a browser upload reaches an app handler: a copy in a fresh folder of Gradio's upload folder
    (the app refuses image paths anywhere else: webapp.inputs.uploaded)."""
    folder = Path(tempfile.mkdtemp(dir=os.environ["GRADIO_TEMP_DIR"]))
    return str(shutil.copy(path, folder / Path(path).name))


def sigterm_after_rows(proc, metrics: Path, rows: int = 4, wait_s: float = 120) -> str:
    """Send SIGTERM to a training subprocess once its metrics.jsonl holds `rows` rows; returns its output."""
    import signal
    import time

    deadline = time.time() + wait_s
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= rows):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    return out

"""A CPU Space must not pull CUDA wheels (README "Hugging Face Space").

Spaces install pre-requirements.txt, then requirements.txt. The first pins the CPU build of torch from
PyTorch's CPU index; these tests check that pin against requirements.txt, and (with PyPI reachable) resolve
requirements.txt with pip against PyPI in a venv that holds only that CPU torch, the state a Space is in
after pre-requirements.txt: nothing CUDA may be planned.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
NETWORK_TROUBLE = ("ConnectionError", "ConnectTimeout", "ReadTimeout", "Max retries", "Temporary failure",
                   "Network is unreachable", "timed out", "SSLError", "ProxyError", "HTTP error 5")
CUDA_PREFIXES = ("nvidia-", "triton", "cuda-")  # any of these (or torch itself) planned after pre-requirements.txt


def requirement_lines(path: Path) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("-")]


def torch_requirement(path: Path) -> Requirement:
    return next(Requirement(line) for line in requirement_lines(path) if Requirement(line).name == "torch")


def test_every_requirement_is_in_the_package_metadata():
    """requirements.txt (the checkout's install) needs kornia for AutoAugment, but `pip install .` knew no kornia in
    its dependencies or any extra: a packaged install's `data.clf_augment=autoaugment_cutout` ended in an
    ImportError. Each requirement is a dependency or in an extra, with the same version bounds."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    declared += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    for line in requirement_lines(ROOT / "requirements.txt"):
        wanted = Requirement(line)
        assert any(r.name == wanted.name and r.specifier == wanted.specifier for r in declared), \
            f"{line} is in requirements.txt but not in pyproject.toml's dependencies or extras"


def test_pre_requirements_pin_a_cpu_torch_that_requirements_accept():
    pre = (ROOT / "pre-requirements.txt").read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in pre.splitlines()
    pinned = torch_requirement(ROOT / "pre-requirements.txt")
    (version,) = [s.version for s in pinned.specifier if s.operator == "=="]
    assert version.endswith("+cpu")  # only PyTorch's CPU index has it: no silent fall back to PyPI's CUDA build
    assert torch_requirement(ROOT / "requirements.txt").specifier.contains(version)
    names = {Requirement(line).name for f in ("pre-requirements.txt", "requirements.txt")
             for line in requirement_lines(ROOT / f)}
    assert "torchvision" not in names


def pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10):
            return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.network
def test_requirements_resolve_without_cuda_once_cpu_torch_is_in(tmp_path):
    import torch

    if "+cpu" not in torch.__version__:
        pytest.skip(f"needs this interpreter's torch to be a CPU build (it is {torch.__version__})")
    if not pypi_reachable():
        pytest.skip("PyPI is not reachable from here")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp_path / "venv"], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    here = Path(sysconfig.get_path("purelib"))
    for entry in [here / "torch", *here.glob("torch-*.dist-info")]:  # the CPU torch only, as on the Space
        (site / entry.name).symlink_to(entry)
    report = tmp_path / "report.json"
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--isolated", "--dry-run",
                               "--quiet", "--report", report, "-r", ROOT / "requirements.txt"],
                              capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.skip("PyPI answered too slowly to resolve requirements.txt")
    if done.returncode != 0 and any(s in done.stderr for s in NETWORK_TROUBLE):
        pytest.skip(f"the network failed during the resolution: {done.stderr.strip().splitlines()[-1][:200]}")
    assert done.returncode == 0, done.stderr[-3000:]
    planned = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "gradio" in planned  # the resolution really ran against PyPI
    assert not sorted(n for n in planned if n == "torch" or n.startswith(CUDA_PREFIXES)), planned

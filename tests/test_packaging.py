"""`pip install .` and `pip install -e .` into fresh venvs, then the console scripts from another directory.

Nothing is downloaded, so nothing is skipped offline: the venvs see this interpreter's site-packages through
a .pth file (torch and friends are not installed twice), the wheel is built with --no-build-isolation and
installed with --no-deps --no-index. Decoy `train`, `explain`, `webapp` and `app` modules on PYTHONPATH stand
for other PyPI projects of those names: ours must neither shadow them nor be shadowed by them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from dat_core import __version__

pytestmark = pytest.mark.slow  # about a minute on 2 shared cores: a wheel, an editable install, ~8 interpreters

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("dat-app", "dat-explain", "dat-train")
DECOYS = ("train", "explain", "webapp", "app")


def run(*cmd, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def clean_copy(dest: Path) -> Path:
    """The files git would check out (tracked plus new, not ignored): no build/, runs/ or caches."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to copy the tracked files")
    names = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT).stdout
    for name in filter(None, names.split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def fresh_venv(path: Path) -> Path:
    """A venv without pip whose site-packages comes first, then this interpreter's (via a .pth file)."""
    run(sys.executable, "-m", "venv", "--without-pip", path, cwd=path.parent)
    python = path / "bin" / "python"
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                       cwd=path.parent).stdout.strip())
    (purelib / "_this_interpreter.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


def pip(python: Path, *args, cwd: Path) -> None:
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        "--no-build-isolation", "--quiet", *args, cwd=cwd, timeout=300)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


@pytest.fixture(scope="module")
def decoys(tmp_path_factory) -> Path:
    """Top-level modules named like ours that fail loudly when imported."""
    d = tmp_path_factory.mktemp("decoys")
    for name in DECOYS:
        (d / f"{name}.py").write_text(f"raise ImportError('decoy {name} imported: the installed copy was shadowed')\n")
    return d


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(venv python, its site-packages) with a wheel built from a clean copy of this checkout."""
    version = run(sys.executable, "-m", "pip", "--version", cwd=ROOT).stdout.split()[1]
    if tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < (22, 3):
        pytest.skip("pip --python needs pip >= 22.3")
    tmp = tmp_path_factory.mktemp("install")
    source = clean_copy(tmp / "src")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", tmp / "dist",
        source, cwd=tmp, timeout=300)
    wheel = next((tmp / "dist").glob("dat_explainer-*.whl"))
    python = fresh_venv(tmp / "venv")
    pip(python, wheel, cwd=tmp)
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp).stdout.strip())
    return python, purelib


def test_installed_copy_holds_every_module_under_two_names(installed):
    """Only dat_core and dat_explainer land in site-packages; every module of ours, the training configs and
    the bundled assets are inside them."""
    _, purelib = installed
    ours = sorted(p.name for p in purelib.iterdir() if not p.name.endswith((".dist-info", ".pth")))
    assert ours == ["dat_core", "dat_explainer"]  # no top-level explain, train, webapp, app or assets
    for package in ("explain", "train", "webapp"):
        expected = {p.relative_to(ROOT / package) for p in (ROOT / package).rglob("*.py")}
        got = {p.relative_to(purelib / "dat_explainer" / package)
               for p in (purelib / "dat_explainer" / package).rglob("*.py")}
        assert expected <= got, sorted(map(str, expected - got))
    expected = {p.relative_to(ROOT / "dat_core") for p in (ROOT / "dat_core").rglob("*.py")}
    assert expected <= {p.relative_to(purelib / "dat_core") for p in (purelib / "dat_core").rglob("*")}
    for asset in ("assets/models/DEFAULT", "assets/examples/cat-0000.jpg", "spaces/app.py"):
        assert (purelib / "dat_explainer" / asset).is_file(), asset
    assert list((purelib / "dat_explainer" / "train" / "configs").glob("*.toml"))


def test_console_scripts_from_another_directory_with_decoys_on_the_path(installed, decoys, tmp_path):
    python, purelib = installed
    bin_dir = python.parent
    env = clean_env(PYTHONPATH=str(decoys))
    for script in SCRIPTS:
        out = run(bin_dir / script, "--help", cwd=tmp_path, env=env).stdout
        assert "usage:" in out, script
    # a real run, from elsewhere, on the bundled model named by its zoo name
    example = purelib / "dat_explainer" / "assets" / "examples" / "cat-0000.jpg"
    run(bin_dir / "dat-explain", "counterfactual", "--model", "dat-cifar10-wrn16-2", "--image", example,
        "--target", "dog", "--steps", "2", "--out", "cf", cwd=tmp_path, env=env)
    assert (tmp_path / "cf" / "metrics.json").is_file()


def test_library_use_of_the_installed_copy(installed, tmp_path):
    """`import dat_core` finds the installed copy (not this checkout), its bundled models and seed bank, and the
    version; the app's example images resolve inside the installed package too."""
    python, purelib = installed
    code = ("import sys, dat_core\n"
            "from dat_core.assets import ASSETS_DIR\n"
            "from dat_explainer.cli import home\n"
            "m = dat_core.load_model('default')\n"
            "print(dat_core.__file__, ASSETS_DIR, m.config['arch'], dat_core.__version__, home())\n"
            "try:\n    import train\nexcept ImportError:\n    print('no-top-level-train')\n")
    out = run(python, "-c", code, cwd=tmp_path, env=clean_env()).stdout.split()
    assert Path(out[0]).is_relative_to(purelib) and Path(out[1]) == purelib / "dat_explainer" / "assets"
    assert out[2] == "wrn-16-2" and out[3] == __version__ and Path(out[4]) == purelib / "dat_explainer"
    assert out[5] == "no-top-level-train"


def test_editable_install_runs_the_checkout(tmp_path, decoys):
    """`pip install -e .`: the console scripts run the checkout's own files, decoys or not."""
    source = clean_copy(tmp_path / "src")
    python = fresh_venv(tmp_path / "venv")
    pip(python, "-e", source, cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = clean_env(PYTHONPATH=str(decoys))
    out = run(python.parent / "dat-train", "--help", cwd=elsewhere, env=env).stdout
    assert "stage1" in out
    where = run(python, "-c", "import dat_core; print(dat_core.__file__)", cwd=elsewhere, env=env).stdout.strip()
    assert Path(where) == source / "dat_core" / "__init__.py"


"""The README's "Explain from Python / the command line" section runs as written.

Its python block is executed and every `python -m explain ...` line is run, in a temp dir that holds
the example image the snippets name, with `"default"` / `--model default` resolving to a tiny
checkpoint written here (dat_core.loading.DEFAULT_MODEL_DIR points at it) and the default
counterfactual length cut from 60 to 12 steps (speed: every frame goes into a GIF and an APNG).
Each command line is followed by `# writes PATH, PATH, ...`: those files must exist afterwards.
"""

import re
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import warmed_wrn

from dat_core import loading
from dat_core.checkpoint import save_model
from explain.cli import main
from explain.params import DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Explain from Python / the command line"


def _section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert SECTION in text
    body = text.split(SECTION, 1)[1]
    return re.split(r"^## ", body, maxsplit=1, flags=re.M)[0]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", _section(), flags=re.M | re.S)


def _commands() -> list[tuple[list[str], list[str]]]:
    """(argv after `python -m explain`, files the next `# writes` line promises) per command line."""
    lines = [line.strip() for block in _blocks("bash") for line in block.splitlines() if line.strip()]
    out = []
    for i, line in enumerate(lines):
        if line.startswith("python -m explain "):
            promise = lines[i + 1] if i + 1 < len(lines) else ""
            assert promise.startswith("# writes "), f"no '# writes' line after: {line}"
            out.append((shlex.split(line)[3:], [p.strip() for p in promise[len("# writes "):].split(",")]))
    return out


@pytest.fixture
def readme_dir(tmp_path, monkeypatch):
    """A working dir with the section's example images, and "default" = a tiny wrn-10-1 checkpoint."""
    save_model(warmed_wrn(), tmp_path / "models" / "dat-tiny")
    monkeypatch.setattr(loading, "DEFAULT_MODEL_DIR", tmp_path / "models")
    monkeypatch.setitem(DEFAULTS["L2"], "steps", 12)
    work = tmp_path / "work"
    for name in set(re.findall(r"assets/examples/[\w.-]+", _section())):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, work / name)
    monkeypatch.chdir(work)
    return work


def test_section_has_a_python_block_and_every_subcommand():
    assert len(_blocks("python")) == 1
    assert {argv[0] for argv, _ in _commands()} == {"counterfactual", "landscape", "attribute", "generate"}


def test_python_block_runs_and_writes_the_files_it_names(readme_dir, capsys):
    code = _blocks("python")[0]
    exec(compile(code, "README.md (Explain from Python)", "exec"), {"__name__": "__readme__"})
    assert "-> dog: flips at step" in capsys.readouterr().out
    named = re.findall(r'"([\w./-]+\.(?:png|gif|json))"', code)
    assert len(named) == 6
    for name in named:
        assert (readme_dir / name).stat().st_size > 0, name


@pytest.mark.parametrize("argv,promised", _commands(), ids=lambda v: v[-1].rsplit("/", 1)[-1])
def test_cli_line_runs_and_writes_what_it_says(readme_dir, argv, promised):
    assert main(argv) == 0
    for name in promised:
        assert (readme_dir / name).stat().st_size > 0, name

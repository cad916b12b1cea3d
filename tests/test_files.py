"""dat_core.files: a file is replaced whole or not at all."""

from pathlib import Path

import pytest

from dat_core.files import replacing, write_text


def test_write_text_replaces_whole_and_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "run.json"
    write_text(path, '{"steps": 3}')
    assert path.read_text() == '{"steps": 3}'
    with pytest.raises(UnicodeEncodeError):
        write_text(path, '{"steps": 4, "x": "\ud800"}')       # fails after the file was opened for writing
    assert path.read_text() == '{"steps": 3}' and [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_replacing_leaves_no_temporary_file_on_error(tmp_path):
    path = tmp_path / "part.npz"
    with pytest.raises(RuntimeError), replacing(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("stopped")
    assert list(tmp_path.iterdir()) == []


def _claim_in_child(folder, hold: float):
    import subprocess
    import sys
    code = ("import sys, time; from pathlib import Path; from dat_core.files import claimed\n"
            "with claimed(Path(sys.argv[1]), 'test run'):\n"
            "    print('held', flush=True); time.sleep(float(sys.argv[2]))\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(folder), str(hold)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_claimed_folder_refuses_a_second_process_until_the_first_ends_or_is_killed(tmp_path):
    from dat_core.files import claimed

    folder = tmp_path / "run"
    child = _claim_in_child(folder, 60)
    try:
        with pytest.raises(ValueError, match="run is in use by another benchmark"):
            with claimed(folder, "benchmark"):
                pass
    finally:
        child.kill()   # SIGKILL: the lock goes with the process
        child.wait()
    with claimed(folder, "benchmark"):
        with pytest.raises(ValueError, match="in use"):   # and one process cannot claim it twice either
            with claimed(folder, "benchmark"):
                pass
    with claimed(folder, "benchmark"):   # released when the block ended
        pass


def test_image_writers_keep_the_previous_file_when_a_write_fails(tmp_path, monkeypatch):
    """GIF, APNG, PNG and figure writers wrote straight into the target: a stop or a full disk mid-write left half
    an image where the previous one was."""
    import numpy as np
    from PIL import Image

    from dat_core.sampling import save_png
    from explain.export import save_apng, save_figure, save_gif
    from explain.plots import new_figure

    frames = np.zeros((3, 4, 4, 3), np.uint8)
    real_save = Image.Image.save

    def half_then_fail(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", half_then_fail)
    writers = {"a.gif": lambda p: save_gif(frames, p, scale=1, progress=False),
               "a.png": lambda p: save_apng(frames, p, scale=1, progress=False),
               "b.png": lambda p: save_png(frames[0], p)}
    for name, write in writers.items():
        (tmp_path / name).write_bytes(b"previous")
        with pytest.raises(OSError):
            write(tmp_path / name)
        assert (tmp_path / name).read_bytes() == b"previous"
    fig = new_figure(2, 2)
    monkeypatch.setattr(type(fig), "savefig", lambda self, fp, **k: (open(fp, "wb").write(b"half"), 1 / 0))
    (tmp_path / "f.png").write_bytes(b"previous")
    with pytest.raises(ZeroDivisionError):
        save_figure(fig, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "a.png", "b.png", "f.png"]   # no temporaries


def test_replacing_dir_swaps_a_whole_tree_and_keeps_the_old_one_when_filling_fails(tmp_path):
    """The ACE export wrote its files straight into the tree: a stop mid-export left half a tree, and a rerun
    left files of the earlier tree beside the new ones."""
    from dat_core.files import replacing_dir

    root = tmp_path / "eps_0.5"
    with replacing_dir(root) as tree:
        (tree / "a.png").write_bytes(b"first")
        (tree / "stale.png").write_bytes(b"first")
    with pytest.raises(RuntimeError), replacing_dir(root) as tree:
        (tree / "a.png").write_bytes(b"half")
        raise RuntimeError("stopped")
    assert sorted(p.name for p in root.iterdir()) == ["a.png", "stale.png"]
    assert (root / "a.png").read_bytes() == b"first"
    with replacing_dir(root) as tree:
        (tree / "a.png").write_bytes(b"second")
    assert [p.name for p in root.iterdir()] == ["a.png"] and (root / "a.png").read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["eps_0.5"]


def test_replacing_dir_removes_what_a_killed_writer_left_but_not_a_live_one(tmp_path):
    import os

    from dat_core.files import replacing_dir

    dead = tmp_path / ".eps_1.999999999.0badc0de.tmp"       # no such pid
    live = tmp_path / f".eps_1.{os.getppid()}.0badc0de.tmp"
    for d in (dead, live):
        d.mkdir()
        (d / "x.png").write_bytes(b"half")
        age(d)                                                # unchanged for long: not a writer at work
    with replacing_dir(tmp_path / "eps_1") as tree:
        (tree / "x.png").write_bytes(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["eps_1", live.name])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="file is a file, not a folder"), replacing_dir(tmp_path / "file"):
        pass


def test_a_temporary_is_left_behind_only_when_no_writer_can_be_at_work(tmp_path):
    """A pid that is not running here may be a writer in another container (another PID namespace) on a shared
    folder: its temporary is removed only after GRACE seconds unchanged. A temporary of this very pid that this
    process is not writing (a container's PID 1 restarted) is left behind too, and one it is writing is not."""
    import os

    from dat_core.files import GRACE, replacing

    target = tmp_path / "cache.npz"
    fresh = tmp_path / ".cache.npz.999999999.0badc0de.tmp"     # another namespace's writer, at work
    old = tmp_path / ".cache.npz.999999998.0badc0de.tmp"       # a writer killed long ago
    mine = tmp_path / f".cache.npz.{os.getpid()}.0badc0de.tmp"  # this pid, not this process's
    for p in (fresh, old, mine):
        p.write_bytes(b"half")
    for p in (old, mine):
        os.utime(p, (1, 1))
    os.utime(fresh, None)
    with replacing(target) as first:
        first.write_bytes(b"one")
        os.utime(first, (1, 1))
        with replacing(target) as second:                       # this process's own write in flight: kept
            second.write_bytes(b"two")
        assert first.exists()
    assert target.read_bytes() == b"one" and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["cache.npz", fresh.name])
    assert GRACE >= 60


def test_a_stop_between_replacing_dirs_two_renames_keeps_the_new_tree(tmp_path):
    """replacing_dir renames the old tree away, then the new one in: a SIGKILL between the two left no folder,
    and the next write removed both trees. The whole new tree is put in place instead."""

    from dat_core.files import remove_stale

    new = tmp_path / ".best.999999999.0badc0de.tmp"
    old = tmp_path / ".best.999999999.0badc0de.old.tmp"
    for d, text in ((new, b"new"), (old, b"old")):
        d.mkdir()
        (d / "model.safetensors").write_bytes(text)
        age(d)
    remove_stale(tmp_path, ".best.")
    assert [p.name for p in tmp_path.iterdir()] == ["best"]
    assert (tmp_path / "best" / "model.safetensors").read_bytes() == b"new"


def test_an_unwritable_place_is_refused_before_the_work(tmp_path):
    """`check_writable` asked `os.access`, which says yes to root everywhere: `--out /proc/x` passed the early
    check, the work ran, and the end failed. It now tries a file in the folder that would hold the output."""
    from dat_core.files import check_writable

    for path, folder in (("/proc/x", True), ("/proc/x.json", False), ("/proc/sys/x/y", True)):
        with pytest.raises(ValueError, match="cannot write"):
            check_writable(path, "--out", folder=folder)
    check_writable(tmp_path / "new" / "deeper", "--out", folder=True)
    check_writable(tmp_path / "x.json", "--json")
    assert list(tmp_path.iterdir()) == []                                   # the probe leaves nothing


def test_a_failed_write_names_the_file_not_its_temporary_twin(tmp_path):
    """A write that failed said "error: /proc/.x.json.14876.e74b0dba.tmp does not exist"."""
    for target in (tmp_path / "missing" / "x.json", tmp_path):             # no folder to hold it; a folder
        with pytest.raises(OSError) as failed, replacing(target) as tmp:
            tmp.write_bytes(b"{}")
        assert f"cannot write {target}" in str(failed.value) and ".tmp" not in str(failed.value)


def test_only_a_targets_own_temporaries_are_its_own(tmp_path):
    """`.eps_1.` is also the start of the ACE folder eps_1.9's temporaries, and a dated file's temporary held a
    14-digit number where a pid stands: the one was put in place as eps_1, the other crashed os.kill. A name with
    glob characters never matched its own temporaries."""
    import os

    from dat_core.files import remove_stale, replacing, replacing_dir, write_text

    other = [tmp_path / ".eps_1.9.999999999.0badc0de.tmp", tmp_path / ".eps_1.9.999999999.0badc0de.old.tmp"]
    for d in other:
        d.mkdir()
        (d / "x.png").write_bytes(b"eps 1.9")
        age(d)
    with replacing_dir(tmp_path / "eps_1") as tree:
        (tree / "x.png").write_bytes(b"eps 1")
    assert (tmp_path / "eps_1" / "x.png").read_bytes() == b"eps 1" and all(d.exists() for d in other)
    dated = tmp_path / ".report.20251207103000.0badc0de.tmp"
    dated.write_text("x")
    os.utime(dated, (1, 1))
    write_text(tmp_path / "report", "{}")
    assert dated.exists()
    glob_name = tmp_path / ".eval[1].json.999999999.0badc0de.tmp"
    glob_name.write_text("half")
    os.utime(glob_name, (1, 1))
    with replacing(tmp_path / "eval[1].json") as tmp:
        tmp.write_text("{}")
    assert not glob_name.exists()
    remove_stale(tmp_path, None)                          # every target's own, each put back where it belongs
    assert not any(d.exists() for d in other)
    assert (tmp_path / "eps_1.9" / "x.png").read_bytes() == b"eps 1.9"


@pytest.mark.parametrize("when", ["after the first rename returned", "before the second"])
def test_a_stop_between_the_two_renames_in_this_process_keeps_a_tree(tmp_path, monkeypatch, when):
    """Ctrl-C or SIGTERM (training turns them into KeyboardInterrupt) between replacing_dir's two renames removed
    both the old tree and the new one."""
    import os

    from dat_core import files

    root = tmp_path / "best"
    root.mkdir()
    (root / "a").write_bytes(b"old")
    real, calls = os.replace, []

    def stopped(src, dst):
        calls.append(src)
        if when == "before the second" and len(calls) == 2:
            raise KeyboardInterrupt
        result = real(src, dst)
        if when == "after the first rename returned" and len(calls) == 1:
            raise KeyboardInterrupt          # a signal checked as the call returns
        return result

    monkeypatch.setattr(files.os, "replace", stopped)
    with pytest.raises(KeyboardInterrupt), files.replacing_dir(root) as tree:
        (tree / "a").write_bytes(b"new")
    monkeypatch.setattr(files.os, "replace", real)
    assert [p.name for p in tmp_path.iterdir()] == ["best"] and (root / "a").read_bytes() == b"new"


def test_a_pair_is_left_behind_together(tmp_path):
    """A tree's mtime does not change while files are written in its subfolders, and the old tree of a pair may be
    older than the new one: the newest file of the pair decides, and a pair is restored or kept together."""
    import os

    from dat_core.files import remove_stale

    new, old = tmp_path / ".best.999999999.0badc0de.tmp", tmp_path / ".best.999999999.0badc0de.old.tmp"
    for d in (new, old):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "f").write_bytes(d.name.encode())
    age(old)
    for p in (new, new / "sub"):
        os.utime(p, (1, 1))
    remove_stale(tmp_path, ".best.")                      # new/sub/f was written just now: both kept
    assert new.exists() and old.exists()
    os.utime(new / "sub" / "f", (1, 1))
    remove_stale(tmp_path, ".best.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"] and (tmp_path / "best" / "sub" / "f").exists()


def age(path):
    """Every file of `path` last changed long ago (files.GRACE): what a writer killed long ago left."""
    import os

    for p in [path, *path.rglob("*")]:
        os.utime(p, (1, 1))


def test_a_dotted_target_is_restored_under_its_own_name(tmp_path):
    from dat_core.files import remove_stale

    for suffix in (".tmp", ".old.tmp"):
        (tmp_path / f"..cache.999999999.0badc0de{suffix}").mkdir()
    remove_stale(tmp_path, "..cache.", grace=0)
    assert [p.name for p in tmp_path.iterdir()] == [".cache"]


def test_claiming_a_folder_sweeps_what_killed_writers_left_anywhere_in_it(tmp_path):
    """A benchmark killed while writing its ACE tree left ace/.eps_1.<pid>.<hex>.tmp (220 KB, partial) beside the
    finished eps_1 after a successful resume: replacing_dir waited GRACE (600 s) for it although the folder was
    claimed, so no other writer could be at work."""
    import os

    from dat_core.files import claimed

    (tmp_path / "ace" / "eps_1").mkdir(parents=True)
    left = [tmp_path / "ace" / ".eps_1.999999999.0badc0de.tmp", tmp_path / ".report.md.999999999.0badc0de.tmp",
            tmp_path / "parts" / ".r0-p00000.npz.999999999.0badc0de.tmp"]
    for p in left:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.mkdir() if "eps" in p.name else p.write_bytes(b"half")   # fresh: written a moment ago
    ours = tmp_path / "ace" / f".eps_2.{os.getppid()}.0badc0de.tmp"   # a live pid's: not touched
    ours.mkdir()
    with claimed(tmp_path, "benchmark"):
        assert not any(p.exists() for p in left) and ours.exists()
        assert (tmp_path / "ace" / "eps_1").is_dir()


def test_a_claimed_folder_given_as_dot_is_named(tmp_path, monkeypatch):
    """`--out .` said " is in use by another benchmark": the folder `.` has no name of its own."""
    from dat_core.files import claimed

    folder = tmp_path / "here"
    child = _claim_in_child(folder, 60)
    monkeypatch.chdir(folder)
    try:
        with pytest.raises(ValueError, match="^here is in use by another benchmark"):
            with claimed(Path("."), "benchmark"):
                pass
    finally:
        child.kill()
        child.wait()

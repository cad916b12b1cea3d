"""dat_core.files: a file is replaced whole or not at all."""

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

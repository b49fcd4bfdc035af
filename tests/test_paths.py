import json

import pytest

from safeladder.paths import write_json


def test_write_json_replaces_the_whole_file(tmp_path):
    target = tmp_path / "sub" / "result.json"
    write_json(target, {"a": 1})
    write_json(target, {"b": "é"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"b": "é"}
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]  # no temporary left behind


def test_write_json_that_fails_midway_keeps_the_old_file(tmp_path):
    target = tmp_path / "done.json"
    write_json(target, {"final": "a"})
    with pytest.raises(TypeError):
        write_json(target, {"final": object()})  # not serialisable: fails while writing
    assert json.loads(target.read_text()) == {"final": "a"}
    assert [p.name for p in tmp_path.iterdir()] == ["done.json"]

"""Corpus loading: both layouts, and errors that name file:line: field."""

from __future__ import annotations

import gzip
import json

import pytest

from safeladder.errors import DataError
from safeladder.search.corpus import Document, load_corpus, split_contents, write_corpus


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_title_text_and_search_r1_contents_layouts(tmp_path):
    f = write(tmp_path / "c.jsonl", [
        {"id": "a", "title": "Alpha", "text": " Alpha is a letter. "},
        {"id": 7, "contents": '"Seven Hills"\nA city built on seven hills.'},
        {"id": "n", "text": "No title here."},
        "",  # blank lines are skipped
    ])
    docs = load_corpus(f)
    assert docs == [Document("a", "Alpha", "Alpha is a letter."), Document("7", "Seven Hills", "A city built on seven hills."),
                    Document("n", "", "No title here.")]
    assert docs[1].contents == '"Seven Hills"\nA city built on seven hills.' and docs[2].contents == "No title here."
    assert split_contents("just text") == ("", "just text")


@pytest.mark.parametrize("row, where", [
    ({"id": "a", "title": "T"}, "c.jsonl:2: text: missing"),
    ({"title": "T", "text": "x"}, "c.jsonl:2: id: missing"),
    ({"id": ["x"], "text": "x"}, "c.jsonl:2: id: expected a string or integer, got list"),
    ({"id": "b", "text": 5}, "c.jsonl:2: text: expected a string, got int"),
    ({"id": "b", "text": "   "}, "c.jsonl:2: text: empty"),
    ({"id": "b", "title": 3, "text": "x"}, "c.jsonl:2: title: expected a string, got int"),
    ({"id": "a", "text": "again"}, "c.jsonl:2: id: duplicate id 'a' (first seen at line 1)"),
    ([1, 2], "c.jsonl:2: expected a JSON object, got array"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, row, where):
    f = write(tmp_path / "c.jsonl", [{"id": "a", "text": "fine"}, row])
    with pytest.raises(DataError) as err:
        load_corpus(f)
    assert str(err.value).endswith(where)


def test_invalid_json_and_empty_files(tmp_path):
    with pytest.raises(DataError, match=r"c.jsonl:2"):
        load_corpus(write(tmp_path / "c.jsonl", ['{"id": "a", "text": "x"}', "{not json"]))
    with pytest.raises(DataError, match="no documents"):
        load_corpus(write(tmp_path / "e.jsonl", [""]))


def test_write_then_load_round_trip_gzip(tmp_path):
    docs = [Document("1", "Ünï", "text one"), Document("2", "", "text two")]
    assert write_corpus(tmp_path / "c.jsonl.gz", docs) == 2
    with gzip.open(tmp_path / "c.jsonl.gz", "rt") as fh:
        assert json.loads(fh.readline()) == {"id": "1", "title": "Ünï", "text": "text one"}
    assert load_corpus(tmp_path / "c.jsonl.gz") == docs

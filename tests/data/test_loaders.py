"""Loaders: every format round-trips, column mapping works, and every bad row names file:line: field."""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from safeladder.data.loaders import ColumnMapping, LoadResult, load_samples, read_jsonl, write_jsonl
from safeladder.data.sample import Sample
from safeladder.errors import DataError, SafeLadderError

ROWS = [
    {"id": "a", "prompt": "How do I pick a lock?", "label": "safety", "reference": None},
    {"id": "b", "prompt": "What is 2+3?", "label": "math", "reference": "5"},
    {"id": "c", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                             {"role": "user", "content": "Name a prime."}], "label": "general"},
]


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _check_rows(samples: list[Sample]) -> None:
    assert [s.id for s in samples] == ["a", "b", "c"]
    assert samples[0].prompt == "How do I pick a lock?" and samples[0].label == "safety"
    assert samples[0].reference is None
    assert samples[1].reference == "5" and samples[1].label == "math"
    assert samples[2].prompt is None
    assert samples[2].messages == ROWS[2]["messages"]
    assert samples[2].user_text == "Name a prime."


# ----------------------------------------------------------------------------------- round trips

def test_jsonl_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    assert write_jsonl(path, ROWS) == 3
    result = load_samples(path)
    assert isinstance(result, LoadResult)
    assert result.skipped == [] and result.path == path
    _check_rows(result.samples)


def test_samples_written_back_load_identically(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", ROWS)
    original = load_samples(tmp_path / "in.jsonl").samples
    assert write_jsonl(tmp_path / "out.jsonl", original) == 3  # pydantic models, not dicts
    assert load_samples(tmp_path / "out.jsonl").samples == original


def test_gzip_jsonl_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl.gz"
    write_jsonl(path, ROWS)
    with gzip.open(path, "rt", encoding="utf-8") as fh:  # really compressed, not just named .gz
        assert json.loads(fh.readline())["id"] == "a"
    _check_rows(load_samples(path).samples)


def test_json_lines_suffix_and_blank_lines(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "d.json-lines", ["", json.dumps(ROWS[0]), "   ", json.dumps(ROWS[1]), ""])
    result = load_samples(path)
    assert [s.id for s in result.samples] == ["a", "b"] and result.skipped == []


def test_csv_round_trip_with_json_columns(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "data.csv", ["id", "prompt", "messages", "label", "reference", "images", "metadata"], [
        ["a", ROWS[0]["prompt"], "", "safety", "", "", ""],
        ["b", ROWS[1]["prompt"], "", "math", "5", '["img/1.png"]', '{"source": "gsm"}'],
        ["c", "", json.dumps(ROWS[2]["messages"]), "general", "", "", ""],
    ])
    samples = load_samples(path).samples
    _check_rows(samples)
    assert samples[0].images == [] and samples[0].metadata == {}
    assert samples[1].images == ["img/1.png"] and samples[1].metadata == {"source": "gsm"}


def test_parquet_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    table = pa.table({
        "id": ["a", "b", "c"],
        "prompt": [ROWS[0]["prompt"], ROWS[1]["prompt"], None],
        "messages": [None, None, ROWS[2]["messages"]],
        "label": ["safety", "math", "general"],
        "reference": [None, "5", None],
    })
    pq.write_table(table, path)
    _check_rows(load_samples(path).samples)


def test_parquet_integer_ids_and_json_text_metadata(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": [7, 8], "prompt": ["p", "q"], "label": ["x", "x"],
                             "metadata": ['{"k": 1}', None]}), path)
    samples = load_samples(path).samples
    assert [s.id for s in samples] == ["7", "8"]
    assert samples[0].metadata == {"k": 1} and samples[1].metadata == {}


def test_fmt_overrides_suffix(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "data.txt", [json.dumps(r) for r in ROWS])
    _check_rows(load_samples(path, fmt="jsonl").samples)


# -------------------------------------------------------------------------------- column mapping

def test_renamed_and_dotted_columns(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "conv.jsonl", [
        json.dumps({"uid": "q1", "conversation": {"question": "Is the sky blue?", "gold": "yes"}, "kind": "knowledge"}),
        json.dumps({"uid": "q2", "conversation": {"question": "2*3?", "gold": "6"}, "kind": "math"}),
    ])
    mapping = ColumnMapping(id="uid", prompt="conversation.question", reference="conversation.gold", label="kind")
    samples = load_samples(path, mapping).samples
    assert [(s.id, s.prompt, s.reference, s.label) for s in samples] == [
        ("q1", "Is the sky blue?", "yes", "knowledge"), ("q2", "2*3?", "6", "math")]


def test_literal_dotted_csv_column_and_dict_mapping(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "flat.csv", ["conversation.question", "tag"], [["Why?", "value"]])
    samples = load_samples(path, {"prompt": "conversation.question", "label": "tag"}).samples
    assert samples[0].prompt == "Why?" and samples[0].label == "value"


def test_default_label_and_generated_ids(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "benign.jsonl", [
        json.dumps({"prompt": "one"}), "", json.dumps({"prompt": "two", "label": "math"})])
    samples = load_samples(path, ColumnMapping(default_label="benign")).samples
    assert [(s.id, s.label) for s in samples] == [("benign-1", "benign"), ("benign-3", "math")]


def test_generated_id_stem_strips_compound_suffix(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl.gz"
    write_jsonl(path, [{"prompt": "x", "label": "normal"}])
    assert load_samples(path).samples[0].id == "pairs-1"


def test_metadata_columns_merge_into_metadata(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "m.csv", ["prompt", "label", "metadata", "source", "difficulty"], [
        ["p1", "math", '{"lang": "en"}', "gsm8k", "3"],
    ])
    mapping = ColumnMapping(metadata_columns=["source", "difficulty"])
    assert load_samples(path, mapping).samples[0].metadata == {"lang": "en", "source": "gsm8k", "difficulty": "3"}


def test_nested_metadata_column_keeps_its_path_as_key(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "n.jsonl", [json.dumps({"prompt": "p", "label": "x", "info": {"src": "web"}})])
    assert load_samples(path, ColumnMapping(metadata_columns=["info.src"])).samples[0].metadata == {"info.src": "web"}


def test_mapping_rejects_unknown_keys_and_impossible_settings() -> None:
    with pytest.raises(ValidationError, match="question"):
        ColumnMapping(question="q")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="cannot both be null"):
        ColumnMapping(prompt=None, messages=None)
    with pytest.raises(ValidationError, match="no 'default_label'"):
        ColumnMapping(label=None)
    assert ColumnMapping(label=None, default_label="safety").label is None


# ------------------------------------------------------------------------------- error messages

def test_bad_json_on_line_3(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "bad.jsonl", [json.dumps(ROWS[0]), json.dumps(ROWS[1]), '{"prompt": "x",'])
    with pytest.raises(DataError) as info:
        load_samples(path)
    err = info.value
    assert str(err).startswith(f"{path}:3: invalid JSON: ")
    assert (err.line, err.field) == (3, None)


def test_missing_prompt_column_names_user_column(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "q.csv", ["query", "label"], [["hello", "safety"]])
    with pytest.raises(DataError) as info:
        load_samples(path, ColumnMapping(prompt="question"))
    assert str(info.value).startswith(f"{path}:2: question (prompt): missing")
    assert info.value.field == "question (prompt)"


def test_csv_line_numbers_are_physical_after_multiline_field(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "ml.csv", ["id", "prompt", "label"], [
        ["a", "first line\nsecond line\nthird line", "safety"],  # occupies lines 2-4
        ["b", "   ", "safety"],                                   # line 5: empty prompt
    ])
    assert path.read_text().count("\n") == 5
    result = load_samples(path, on_error="skip")
    assert [s.prompt for s in result.samples] == ["first line\nsecond line\nthird line"]
    assert [str(e) for e in result.skipped] == [f"{path}:5: prompt: empty"]
    with pytest.raises(DataError, match=r":5: prompt: empty$"):
        load_samples(path)


def test_csv_bad_json_cell_and_wrong_width(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "w.csv", [
        "prompt,label,msgs", 'x,safety,', '"a\nb",safety,', "y,safety,[oops", "z,safety", "w,safety,"])
    result = load_samples(path, ColumnMapping(messages="msgs"), on_error="skip")
    assert [s.prompt for s in result.samples] == ["x", "a\nb", "w"]
    assert [str(e) for e in result.skipped] == [
        f"{path}:5: msgs (messages): invalid JSON: Expecting value at column 2",
        f"{path}:6: row has 2 fields but the header has 3",
    ]


def test_parquet_row_error_says_row(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "prompt": ["ok", None, "fine"], "label": ["x", "x", "x"]}), path)
    with pytest.raises(DataError) as info:
        load_samples(path)
    assert str(info.value).startswith(f"{path}:2: prompt: missing")
    assert str(info.value).endswith("(row 2)")


def test_wrong_type_and_not_an_object(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "t.jsonl", [
        json.dumps({"q": 42, "label": "x"}), "[1, 2]", json.dumps({"q": "ok", "label": "x", "images": "a.png"})])
    result = load_samples(path, ColumnMapping(prompt="q"), on_error="skip")
    assert result.samples == []
    assert [str(e) for e in result.skipped] == [
        f"{path}:1: q (prompt): Input should be a valid string (got number)",
        f"{path}:2: expected a JSON object, got array",
        f"{path}:3: images: Input should be a valid list (got string)",
    ]


def test_nested_pydantic_error_points_into_messages(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "m.jsonl", [
        json.dumps({"chat": [{"role": "user", "content": 5}], "label": "x"})])
    with pytest.raises(DataError) as info:
        load_samples(path, ColumnMapping(messages="chat"))
    assert str(info.value) == f"{path}:1: chat (messages): [0].content: Input should be a valid string (got number)"


def test_prompt_and_messages_together_and_missing_label(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "pm.jsonl", [
        json.dumps({"prompt": "p", "messages": [{"role": "user", "content": "c"}], "label": "x"}),
        json.dumps({"prompt": "p"})])
    result = load_samples(path, on_error="skip")
    assert [str(e).split(": ")[0:2] for e in result.skipped] == [[f"{path}:1", "prompt"], [f"{path}:2", "label"]]
    assert "give only one" in result.skipped[0].problem
    assert result.skipped[1].problem.startswith("missing")


def test_skip_mode_counts_and_keeps_good_rows(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "mix.jsonl", [
        json.dumps(ROWS[0]), "{not json", json.dumps({"id": "z", "label": "x"}), json.dumps(ROWS[1]),
        json.dumps({"id": "e", "prompt": "", "label": "x"}), json.dumps(ROWS[2])])
    result = load_samples(path, on_error="skip")
    assert [s.id for s in result.samples] == ["a", "b", "c"]
    assert [e.line for e in result.skipped] == [2, 3, 5]
    assert result.summary() == f"{path}: 3 samples (3 bad rows skipped)"


def test_duplicate_ids_flag_the_later_line(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "dup.jsonl", [
        json.dumps({"id": "x", "prompt": "1", "label": "l"}), json.dumps({"id": "y", "prompt": "2", "label": "l"}),
        json.dumps({"id": "x", "prompt": "3", "label": "l"})])
    with pytest.raises(DataError) as info:
        load_samples(path)
    assert str(info.value) == f"{path}:3: id: duplicate id 'x' (first seen at line 1)"
    result = load_samples(path, on_error="skip")
    assert [s.prompt for s in result.samples] == ["1", "2"] and len(result.skipped) == 1


def test_bad_row_does_not_claim_its_id(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "claim.jsonl", [
        json.dumps({"id": "x", "prompt": "", "label": "l"}), json.dumps({"id": "x", "prompt": "ok", "label": "l"})])
    result = load_samples(path, on_error="skip")
    assert [s.prompt for s in result.samples] == ["ok"]
    assert [e.line for e in result.skipped] == [1]


def test_invalid_utf8_is_a_row_error(tmp_path: Path) -> None:
    path = tmp_path / "enc.jsonl"
    path.write_bytes(json.dumps(ROWS[0]).encode() + b"\n" + b'{"prompt": "\xff", "label": "x"}\n')
    result = load_samples(path, on_error="skip")
    assert len(result.samples) == 1
    assert str(result.skipped[0]).startswith(f"{path}:2: not valid UTF-8")


def test_csv_duplicate_header_always_raises(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "h.csv", ["prompt,prompt,label", "a,b,c"])
    with pytest.raises(DataError, match=r"h\.csv:1: duplicate column 'prompt'"):
        load_samples(path, on_error="skip")


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    odd = tmp_path / "data.xlsx"
    odd.write_text("x")
    with pytest.raises(SafeLadderError) as info:
        load_samples(odd)
    assert str(odd) in str(info.value) and ".jsonl" in str(info.value) and ".parquet" in str(info.value)
    with pytest.raises(SafeLadderError, match="unknown format 'xml'"):
        load_samples(odd, fmt="xml")
    gone = tmp_path / "gone.jsonl"
    with pytest.raises(SafeLadderError, match=re.escape(f"{gone}: file not found")):
        load_samples(gone)
    with pytest.raises(SafeLadderError, match="file not found"):
        read_jsonl(gone)


def test_on_error_must_be_known(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_error"):
        load_samples(tmp_path / "x.jsonl", on_error="ignore")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- jsonl helpers

def test_read_jsonl_yields_line_numbers_and_raises_on_bad_json(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "r.jsonl", ['{"a": 1}', "", '{"a": 2}', "nope"])
    rows = read_jsonl(path)
    assert next(rows) == (1, {"a": 1})
    assert next(rows) == (3, {"a": 2})
    with pytest.raises(DataError, match=r"r\.jsonl:4: invalid JSON"):
        next(rows)


def test_write_jsonl_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.jsonl"
    assert write_jsonl(path, (r for r in ROWS)) == 3
    assert sorted(os.listdir(path.parent)) == ["out.jsonl"]
    assert [obj["id"] for _, obj in read_jsonl(path)] == ["a", "b", "c"]
    assert write_jsonl(path, []) == 0
    assert path.read_text() == "" and os.listdir(path.parent) == ["out.jsonl"]


def test_interrupted_writer_keeps_previous_content(tmp_path: Path) -> None:
    path = tmp_path / "keep.jsonl"
    write_jsonl(path, ROWS[:1])
    before = path.read_bytes()

    def rows_then_crash():
        yield ROWS[1]
        yield ROWS[2]
        raise RuntimeError("generator died")

    with pytest.raises(RuntimeError, match="generator died"):
        write_jsonl(path, rows_then_crash())
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.jsonl"]


def test_write_jsonl_rejects_other_row_types(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    with pytest.raises(TypeError, match="row 2 is a list"):
        write_jsonl(path, [{"a": 1}, [1, 2]])
    assert not path.exists() and os.listdir(tmp_path) == []

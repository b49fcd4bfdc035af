"""Load user data files (JSONL, CSV, Parquet) into Samples, naming `file:line: field` for every bad row.

Users bring their own files with their own column names, so the loader maps columns to Sample
fields (`ColumnMapping`) and turns every failure into one `DataError` that points at the exact
physical line (or Parquet row) and the user's column name, never at a pydantic internals path.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import uuid
from contextlib import closing, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from safeladder.data.sample import Sample
from safeladder.errors import DataError, SafeLadderError

SAMPLE_FIELDS = ("id", "prompt", "messages", "label", "reference", "response", "images", "metadata")

_MISSING = object()
_GZIP_MAGIC = b"\x1f\x8b"
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}

RowItem = tuple[int, "dict[str, Any] | DataError"]


class ColumnMapping(BaseModel):
    """Which of the user's columns feeds each Sample field.

    A value may be a dotted path into nested objects ("conversation.question"); a column whose
    literal name contains the dot wins over the nested lookup. `None` means "never read this field".
    """

    model_config = ConfigDict(extra="forbid")

    id: str | None = "id"
    prompt: str | None = "prompt"
    messages: str | None = "messages"
    label: str | None = "label"
    reference: str | None = "reference"
    response: str | None = "response"
    images: str | None = "images"
    metadata: str | None = "metadata"
    default_label: str | None = None
    metadata_columns: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> "ColumnMapping":
        for name in (*SAMPLE_FIELDS, "default_label"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ValueError(f"'{name}' must not be empty (use null to switch a column off)")
        if any(not column.strip() for column in self.metadata_columns):
            raise ValueError("'metadata_columns' must not contain empty names")
        if self.prompt is None and self.messages is None:
            raise ValueError("'prompt' and 'messages' cannot both be null: rows need one of them")
        if self.label is None and self.default_label is None:
            raise ValueError("'label' is null and no 'default_label' is set: rows would have no label")
        return self

    def describe(self, field: str | None) -> str | None:
        """How errors name a field: the user's column, with the Sample field when they differ."""
        column = getattr(self, field, None) if field in SAMPLE_FIELDS else None
        if field is None or column is None or column == field:
            return field
        return f"{column} ({field})"


@dataclass
class LoadResult:
    """The good samples of one file, plus the errors of the rows skipped (on_error="skip")."""

    samples: list[Sample]
    skipped: list[DataError]
    path: Path

    def summary(self) -> str:
        """One line for logs and the CLI."""
        tail = f" ({len(self.skipped)} bad rows skipped)" if self.skipped else ""
        return f"{self.path}: {len(self.samples)} samples{tail}"


# ---------------------------------------------------------------------------------------- readers
# Each reader yields (line, row dict) or (line, DataError) so that "skip" mode can carry on.

def _open_binary(path: Path) -> IO[bytes]:
    """Open raw or gzip-compressed bytes; sniffing the magic number makes `fmt=` work for .gz too."""
    with open(path, "rb") as probe:
        compressed = probe.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def _decode(raw: bytes, line: int) -> str:
    """Decode one physical line; line 1 may start with a byte-order mark (Excel, Notepad)."""
    return raw.decode("utf-8-sig" if line == 1 else "utf-8")


def _utf8_problem(err: UnicodeDecodeError) -> str:
    return f"not valid UTF-8 text (byte {err.start}: {err.reason})"


def _json_type(value: Any) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def _parse_json_line(text: str, shown: str, line: int) -> dict[str, Any] | DataError:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        return DataError(shown, line, None, f"invalid JSON: {err.msg} at column {err.colno}")
    if not isinstance(obj, dict):
        return DataError(shown, line, None, f"expected a JSON object, got {_json_type(obj)}")
    return obj


def _jsonl_rows(path: Path, shown: str) -> Iterator[RowItem]:
    """One JSON object per line; blank lines are skipped silently."""
    with _open_binary(path) as fh:
        for line, raw in enumerate(_guarded(fh, shown), start=1):
            try:
                text = _decode(raw, line)
            except UnicodeDecodeError as err:
                yield line, DataError(shown, line, None, _utf8_problem(err))
                continue
            if text.strip():
                yield line, _parse_json_line(text, shown, line)


def _guarded(lines: Iterable[bytes], shown: str) -> Iterator[bytes]:
    """Turn low-level read failures (truncated gzip, I/O errors) into a user-facing error."""
    try:
        yield from lines
    except (OSError, EOFError) as err:
        raise SafeLadderError(f"{shown}: cannot read file: {err}") from err


def _csv_rows(path: Path, shown: str) -> Iterator[RowItem]:
    """Header row, then one record per row. Lines are physical lines, so a record whose quoted
    field spans several lines is reported at the line where it starts."""
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # long CoT traces exceed the 128 KiB default
    bad_lines: dict[int, str] = {}

    def text_lines() -> Iterator[str]:
        with _open_binary(path) as fh:
            for line, raw in enumerate(_guarded(fh, shown), start=1):
                try:
                    yield _decode(raw, line)
                except UnicodeDecodeError as err:
                    bad_lines[line] = _utf8_problem(err)
                    yield raw.decode("utf-8", errors="replace")

    reader = csv.reader(text_lines())
    header: list[str] | None = None
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            if header is None or reader.line_num < start:
                raise DataError(shown, start, None, f"unreadable CSV: {err}") from err
            yield start, DataError(shown, start, None, f"unreadable CSV: {err}")
            continue
        bad = next((n for n in range(start, reader.line_num + 1) if n in bad_lines), None)
        if header is None:
            if bad is not None:
                raise DataError(shown, bad, None, bad_lines[bad])
            if not any(cells):
                continue
            header = _check_header(cells, shown, start)
        elif bad is not None:
            yield bad, DataError(shown, bad, None, bad_lines[bad])
        elif not any(cells):
            continue  # blank line, or a row of empty cells as spreadsheets export them
        elif len(cells) != len(header):
            yield start, DataError(shown, start, None, f"row has {len(cells)} fields but the header has {len(header)}")
        else:
            yield start, dict(zip(header, cells))


def _check_header(cells: list[str], shown: str, line: int) -> list[str]:
    seen: set[str] = set()
    for name in cells:
        if name in seen:
            raise DataError(shown, line, None, f"duplicate column {name!r} in the header")
        seen.add(name)
    return cells


def _parquet_rows(path: Path, shown: str) -> Iterator[RowItem]:
    """Rows in file order; the "line" is the 1-based row index."""
    import pyarrow as pa  # deferred: only Parquet users pay the import
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        row = 0
        for batch in batches:
            for record in batch.to_pylist():
                row += 1
                yield row, record
    except (pa.ArrowException, OSError) as err:
        raise SafeLadderError(f"{shown}: cannot read as Parquet: {err}") from err


@dataclass(frozen=True)
class _Format:
    """How one file format is read and how its cells are interpreted."""

    rows: Callable[[Path, str], Iterator[RowItem]]
    unit: str  # what the number in `file:N:` counts, said in messages where it is not "line"
    json_text: frozenset[str]  # fields whose string values hold JSON text
    blank_is_missing: bool  # an empty cell means "no value" (CSV has no null)
    gzip_ok: bool


_FORMATS: dict[str, _Format] = {
    "jsonl": _Format(_jsonl_rows, "line", frozenset({"messages", "metadata"}), False, True),
    "csv": _Format(_csv_rows, "line", frozenset({"messages", "metadata", "images"}), True, True),
    "parquet": _Format(_parquet_rows, "row", frozenset({"messages", "metadata"}), False, False),
}
_SUFFIXES = {".jsonl": "jsonl", ".json-lines": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
SUPPORTED_FORMATS = ".jsonl, .json-lines, .ndjson, .csv (each optionally .gz), .parquet"


def _detect(path: Path, fmt: str | None) -> tuple[_Format, str]:
    """The format (from `fmt` or the suffix) and the file stem used for generated ids."""
    name = path.name
    compressed = name.lower().endswith(".gz")
    base = name[:-3] if compressed else name
    suffix = Path(base).suffix
    kind = _SUFFIXES.get(suffix.lower())
    stem = base[: -len(suffix)] if kind and suffix else Path(base).stem
    if fmt is not None:
        kind = _SUFFIXES.get("." + fmt.lower().lstrip("."))
        if kind is None:
            raise SafeLadderError(f"{path}: unknown format {fmt!r}; supported: jsonl, csv, parquet")
        return _FORMATS[kind], stem
    if kind is None or (compressed and not _FORMATS[kind].gzip_ok):
        raise SafeLadderError(f"{path}: unknown data file type; supported: {SUPPORTED_FORMATS} (or pass fmt=)")
    return _FORMATS[kind], stem


def _require_file(path: Path, shown: str) -> None:
    if not path.exists():
        raise SafeLadderError(f"{shown}: file not found")
    if not path.is_file():
        raise SafeLadderError(f"{shown}: not a regular file")


# ------------------------------------------------------------------------------------ row -> Sample

def _lookup(row: Mapping[str, Any], path: str) -> Any:
    """A literal column first, then a dotted walk through nested objects; _MISSING if absent."""
    if path in row:
        return row[path]
    current: Any = row
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return _MISSING
        current = current[part]
    return current


@dataclass(frozen=True)
class _RowBuilder:
    """Turns one raw row into a Sample, or raises exactly one DataError naming the user's column."""

    shown: str
    stem: str
    mapping: ColumnMapping
    fmt: _Format

    def error(self, line: int, field: str | None, problem: str) -> DataError:
        if self.fmt.unit != "line":
            problem = f"{problem} ({self.fmt.unit} {line})"
        return DataError(self.shown, line, self.mapping.describe(field), problem)

    def build(self, row: Mapping[str, Any], line: int) -> Sample:
        values = self._collect(row, line)
        self._settle_prompt(values, line)
        self._settle_id_and_label(values, line)
        values["metadata"] = self._metadata(row, values.get("metadata"), line)
        try:
            return Sample(**values)
        except ValidationError as err:
            raise self._translate(err, line) from None

    def _collect(self, row: Mapping[str, Any], line: int) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field in SAMPLE_FIELDS:
            column = getattr(self.mapping, field)
            value = _MISSING if column is None else _lookup(row, column)
            if value is _MISSING or value is None:
                continue
            if self.fmt.blank_is_missing and value == "" and field != "prompt":
                continue
            if isinstance(value, str) and field in self.fmt.json_text:
                value = self._json_cell(value, field, line)
            values[field] = value
        return values

    def _json_cell(self, text: str, field: str, line: int) -> Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise self.error(line, field, f"invalid JSON: {err.msg} at column {err.colno}") from None

    def _settle_prompt(self, values: dict[str, Any], line: int) -> None:
        prompt, messages = values.get("prompt"), values.get("messages")
        if isinstance(prompt, str) and not prompt.strip():
            if messages is None:
                raise self.error(line, "prompt", "empty")
            del values["prompt"]  # a blank prompt cell next to a chat: the chat is the input
        elif prompt is None and messages is None:
            field = "prompt" if self.mapping.prompt is not None else "messages"
            other = self.mapping.messages if field == "prompt" else None
            raise self.error(line, field, "missing" + (f" (each row needs it or '{other}')" if other else ""))
        elif prompt is not None and messages is not None:
            raise self.error(line, "prompt", f"set together with '{self.mapping.messages}'; give only one of them")

    def _settle_id_and_label(self, values: dict[str, Any], line: int) -> None:
        ident = values.get("id")
        if ident is None or ident == "":
            values["id"] = f"{self.stem}-{line}"
        elif isinstance(ident, int) and not isinstance(ident, bool):
            values["id"] = str(ident)  # numeric ids are common in exported tables
        if values.get("label") in (None, ""):
            if self.mapping.default_label is None:
                raise self.error(line, "label", "missing (or set default_label in the column mapping)")
            values["label"] = self.mapping.default_label

    def _metadata(self, row: Mapping[str, Any], base: Any, line: int) -> dict[str, Any]:
        if base is not None and not isinstance(base, dict):
            raise self.error(line, "metadata", f"expected an object, got {_json_type(base)}")
        merged = dict(base or {})
        for column in self.mapping.metadata_columns:
            value = _lookup(row, column)
            if value is not _MISSING:
                merged[column] = value
        return merged

    def _translate(self, err: ValidationError, line: int) -> DataError:
        """The first pydantic error, re-addressed to the user's column."""
        first = err.errors()[0]
        loc, msg = first["loc"], first["msg"].removeprefix("Value error, ")
        if loc:
            field, rest = str(loc[0]), loc[1:]
        else:  # model-level check: recover the field from the message
            field = next((f for f in ("messages", "prompt") if f"'{f}'" in msg or f"{f}[" in msg), None)
            rest = ()
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in rest).lstrip(".")
        if first["type"].endswith("_type"):
            msg = f"{msg} (got {_json_type(first.get('input'))})"
        return self.error(line, field, f"{where}: {msg}" if where else msg)


# ------------------------------------------------------------------------------------- public API

def load_samples(
    path: str | os.PathLike[str],
    mapping: ColumnMapping | Mapping[str, Any] | None = None,
    *,
    on_error: Literal["raise", "skip"] = "raise",
    fmt: str | None = None,
) -> LoadResult:
    """Read a user data file into Samples.

    The format comes from the suffix (or `fmt`: "jsonl", "csv", "parquet"). Every bad row yields one
    DataError: with on_error="raise" the first one is raised, with "skip" they are collected in
    `LoadResult.skipped` and the good rows are kept. A missing id becomes "<file stem>-<line>".
    Problems with the file itself (missing, unknown type, bad CSV header) always raise.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    file, shown = Path(path), str(path)
    columns = mapping if isinstance(mapping, ColumnMapping) else ColumnMapping.model_validate(mapping or {})
    _require_file(file, shown)
    spec, stem = _detect(file, fmt)
    builder = _RowBuilder(shown, stem, columns, spec)
    samples: list[Sample] = []
    skipped: list[DataError] = []
    first_seen: dict[str, int] = {}
    with closing(spec.rows(file, shown)) as rows:
        for line, item in rows:
            try:
                if isinstance(item, DataError):
                    raise item
                sample = builder.build(item, line)
                if sample.id in first_seen:
                    where = f"{spec.unit} {first_seen[sample.id]}"
                    raise builder.error(line, "id", f"duplicate id {sample.id!r} (first seen at {where})")
            except DataError as err:
                if on_error == "raise":
                    raise
                skipped.append(err)
                continue
            first_seen[sample.id] = line
            samples.append(sample)
    return LoadResult(samples, skipped, file)


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; raise DataError on the first bad one.

    The file is checked when called (not on first iteration) so a wrong path fails early.
    """
    file, shown = Path(path), str(path)
    _require_file(file, shown)
    return _raise_errors(_jsonl_rows(file, shown))


def _raise_errors(rows: Iterator[RowItem]) -> Iterator[tuple[int, dict[str, Any]]]:
    with closing(rows):
        for line, item in rows:
            if isinstance(item, DataError):
                raise item
            yield line, item


def _to_json_line(row: Any, index: int) -> bytes:
    if isinstance(row, BaseModel):
        obj: Any = row.model_dump(mode="json")
    elif isinstance(row, Mapping):
        obj = dict(row)
    else:
        raise TypeError(f"write_jsonl: row {index} is a {type(row).__name__}, expected a dict or a pydantic model")
    return json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n"


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any] | BaseModel]) -> int:
    """Write rows as JSON lines, atomically: readers see the old file or the complete new one,
    never a half-written one, even if `rows` raises midway. A ".gz" name is gzip-compressed.
    Returns the number of rows written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    # os.open with 0o666 lets the umask decide permissions, as for any normally created file.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    count = 0
    try:
        with os.fdopen(fd, "wb") as raw:
            compress = target.name.lower().endswith(".gz")
            sink = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if compress else nullcontext(raw)
            with sink as out:
                for count, row in enumerate(rows, start=1):
                    out.write(_to_json_line(row, count))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return count


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself; best effort (not every OS or filesystem allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["ColumnMapping", "LoadResult", "SUPPORTED_FORMATS", "load_samples", "read_jsonl", "write_jsonl"]

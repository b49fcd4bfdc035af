"""A retrieval corpus: JSONL, one document per line, `{"id", "title", "text"}`.

Search-R1-style corpora (`{"id", "contents": "\"Title\"\\ntext"}`, e.g. their wiki-18 dump) load
too: the first line of `contents` is the title (quotes stripped), the rest the text. Every bad
row is a `DataError` naming `file:line: field: problem`; ids must be unique (numbers become
strings), so a retrieved passage always points back at one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from safeladder.data.loaders import read_jsonl, write_jsonl
from safeladder.errors import DataError


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str

    @property
    def contents(self) -> str:
        """What indexes see and Search-R1 clients expect: `"Title"\\ntext`."""
        return f'"{self.title}"\n{self.text}' if self.title else self.text

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "title": self.title, "text": self.text}


def _string(row: Mapping[str, Any], field: str, path: str, line: int, required: bool) -> str:
    value = row.get(field)
    if value is None:
        if required:
            raise DataError(path, line, field, "missing")
        return ""
    if not isinstance(value, str):
        raise DataError(path, line, field, f"expected a string, got {type(value).__name__}")
    return value


def split_contents(contents: str) -> tuple[str, str]:
    head, _, rest = contents.partition("\n")
    if rest:
        return head.strip().strip('"').strip(), rest.strip()
    return "", contents.strip()


def document_from_row(row: Any, path: str, line: int) -> Document:
    """One JSON object → Document, or the DataError that says what is wrong with it."""
    if not isinstance(row, dict):
        raise DataError(path, line, None, f"expected a JSON object, got {type(row).__name__}")
    ident = row.get("id")
    if isinstance(ident, int) and not isinstance(ident, bool):
        ident = str(ident)
    if not isinstance(ident, str) or not ident.strip():
        raise DataError(path, line, "id", "missing" if ident in (None, "") else f"expected a string or integer, got {type(ident).__name__}")
    if "text" in row or "contents" not in row:
        title = _string(row, "title", path, line, required=False)
        text = _string(row, "text", path, line, required=True)
    else:
        title, text = split_contents(_string(row, "contents", path, line, required=True))
    if not text.strip():
        raise DataError(path, line, "text" if "text" in row else "contents", "empty")
    return Document(ident.strip(), title.strip(), text.strip())


def load_corpus(path: str | os.PathLike[str]) -> list[Document]:
    """Every document of a JSONL corpus (a `.gz` name is read compressed), in file order."""
    shown = str(path)
    docs: list[Document] = []
    first_seen: dict[str, int] = {}
    for line, row in read_jsonl(path):
        doc = document_from_row(row, shown, line)
        if doc.id in first_seen:
            raise DataError(shown, line, "id", f"duplicate id {doc.id!r} (first seen at line {first_seen[doc.id]})")
        first_seen[doc.id] = line
        docs.append(doc)
    if not docs:
        raise DataError(shown, None, None, "the corpus has no documents")
    return docs


def write_corpus(path: str | os.PathLike[str], docs: Iterable[Document]) -> int:
    """Write documents as `{"id", "title", "text"}` lines (atomically); returns the count."""
    return write_jsonl(Path(path), (d.to_json() for d in docs))

"""The dataset's CSV tables, read with the ``csv`` module: ``train.csv`` and the two kinds of
``solution.csv`` (GLR2020 ``id,landmarks,Usage``; GLR2021 ``id,images,Usage``).

Every error names the file, the line and the fix; blank lines are skipped; ids round-trip
whatever characters they hold.
"""
from __future__ import annotations

import csv
import io
import itertools
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from .submission import read_csv_text

logger = logging.getLogger("landmark_retrieval")



_INT_RE = re.compile(r"[+-]?[0-9]+")


def _parse_int(text: str) -> Optional[int]:
    """``text`` (surrounding spaces allowed) as an int64, or None when it is not one."""
    text = text.strip()
    if not _INT_RE.fullmatch(text):
        return None
    digits = text.lstrip("+-").lstrip("0") or "0"
    if len(digits) > 19:  # not an int64, and int() refuses strings of more than 4300 digits
        return None
    value = int(digits) * (-1 if text.startswith("-") else 1)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


@dataclass
class _CsvTable:
    """A CSV file read by :func:`_read_csv_table`: its header and the wanted columns."""

    path: Path
    header: List[str]  # column names, surrounding spaces stripped
    columns: Dict[str, List[str]]  # wanted column -> its field in every data row (blank lines skipped)
    num_rows: int
    text: str = field(repr=False)

    def lines(self) -> List[int]:
        """1-based line where each data row starts (re-reads the text: for error messages only)."""
        return [line for line, _ in _records_with_lines(self.path, self.text)][1:]


def _is_blank(fields: List[str]) -> bool:
    return not fields or (len(fields) == 1 and not fields[0].strip())


def _records_with_lines(path: Path, text: str) -> Iterator[Tuple[int, List[str]]]:
    """``(start line, fields)`` of every non-blank record of ``text``, the header included.

    Raises:
        ValueError: malformed quoting, naming the line where the bad record starts.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1
            if not _is_blank(fields):
                yield line, fields
    except csv.Error as exc:
        raise ValueError(f"{path}, line {start}: malformed CSV ({exc}); quote fields that contain commas, "
                         'quotes or newlines, and double the quotes inside them ("")') from None


def _read_csv_table(path: Path, required: Sequence[str], header_hint: str, rows_hint: str,
                    optional: Sequence[str] = ()) -> _CsvTable:
    """Read a small-schema CSV file with the ``csv`` module, checking its structure.

    Args:
        path: the file (UTF-8, optional BOM; fields may be quoted and contain commas, quotes
            and newlines).
        required: column names that must be in the header (others are allowed).
        header_hint: the expected header, for messages (``"id,landmark_id"``).
        rows_hint: what one row is, for messages (``"one row per train image"``).
        optional: other columns to return when the header has them.

    Returns:
        The header and the ``required`` (and present ``optional``) columns as lists of str.
        Rows are parsed in chunks and only these columns kept, so memory stays near the
        size of the kept strings (train.csv has 1.6 M rows).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: naming the path (and the line) with the fix, for an empty file, a binary
            or non-UTF-8 file, malformed quoting, a missing or repeated column, or a row with a
            different number of fields than the header.
    """
    if not path.is_file():
        raise FileNotFoundError(f"No file at {path}: expected a CSV file with header '{header_hint}'")
    not_text = (f"{path} is not a UTF-8 CSV text file: expected a header '{header_hint}' and {rows_hint} "
                "(re-export it as UTF-8 CSV)")
    text = read_csv_text(path, not_text)
    empty = f"{path} is empty: expected a header '{header_hint}' and {rows_hint}"
    if not text.strip():
        raise ValueError(empty)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: Optional[List[str]] = None
    wanted: Dict[str, int] = {}
    columns: Dict[str, List[str]] = {}
    num_rows = 0
    try:  # fast path, by chunks of rows: no line bookkeeping (lines are recomputed for an error message)
        for chunk in iter(lambda: list(itertools.islice(reader, 1 << 16)), []):
            if header is None:
                chunk = list(itertools.dropwhile(_is_blank, chunk))
                if not chunk:
                    continue
                header = [name.strip() for name in chunk.pop(0)]
                missing = [name for name in required if name not in header]
                if missing:
                    raise ValueError(f"{path} lacks column(s) {missing}: found header {header}, "
                                     f"expected '{header_hint}'")
                repeated = sorted({name for name in header if header.count(name) > 1})
                if repeated:
                    raise ValueError(f"{path}: column(s) {repeated} appear more than once in the header {header}")
                wanted = {name: header.index(name) for name in (*required, *optional) if name in header}
                columns = {name: [] for name in wanted}
            n = len(header)
            if any(len(fields) != n for fields in chunk):
                if any(len(fields) != n and not _is_blank(fields) for fields in chunk):
                    _raise_first_ragged_row(path, text, header)
                chunk = [fields for fields in chunk if len(fields) == n]
            for name, i in wanted.items():
                columns[name].extend([fields[i] for fields in chunk])
            num_rows += len(chunk)
    except csv.Error:
        for _ in _records_with_lines(path, text):  # raises, naming the line
            pass
        raise  # not reached
    if header is None:
        raise ValueError(empty)
    return _CsvTable(path, header, columns, num_rows, text)


def _raise_first_ragged_row(path: Path, text: str, header: List[str]) -> None:
    """Raise the error of the first row whose number of fields differs from the header's."""
    n = len(header)
    for line, fields in _records_with_lines(path, text):
        if len(fields) != n:
            raise ValueError(
                f"{path}, line {line}: expected {n} fields ({','.join(header)}) as in the header, found "
                f"{len(fields)}: {fields!r}; quote fields that contain commas or newlines")
    raise ValueError(f"{path}: a row has a different number of fields than the header")  # not reached


def _train_labels_fast(ids: List[str], values: List[str]) -> Optional[np.ndarray]:
    """int64 landmark ids when every row is valid (checked in bulk), else None."""
    if min(map(len, ids)) < 3 or len(set(ids)) != len(ids):
        return None
    joined = "\x00".join(ids)  # NUL cannot occur in the text
    if "/" in joined or "\\" in joined:
        return None
    if all(v.isascii() and v.isdigit() and len(v) < 19 for v in values):  # the common case: plain digits
        return np.fromiter(map(int, values), np.int64, len(values))
    parsed = [_parse_int(v) for v in values]  # signs, spaces; None = not an int64
    if any(v is None for v in parsed):
        return None
    return np.array(parsed, np.int64)


def _raise_first_bad_train_row(table: _CsvTable, ids: List[str], values: List[str]) -> None:
    """Raise the error of the first invalid row of ``train.csv``, naming its line."""
    path = table.path
    first_line: Dict[str, int] = {}
    for line, image_id, value in zip(table.lines(), ids, values):
        if len(image_id) < 3:
            raise ValueError(f"{path}, line {line}: id {image_id!r} is shorter than 3 characters; "
                             "ids must be strings of at least 3 characters (GLR ids are 16 hex characters)")
        if "/" in image_id or "\\" in image_id:
            raise ValueError(f"{path}, line {line}: id {image_id!r} contains a path separator; an id is the "
                             "file name of its image without '.jpg' (train/a/b/c/<id>.jpg), "
                             "so it cannot hold '/' or '\\'")
        if _parse_int(value) is None:
            raise ValueError(f"{path}, line {line}: landmark_id {value!r} of id {image_id!r} is not an integer; "
                             "landmark_id must be an integer")
        if image_id in first_line:
            raise ValueError(f"{path}, line {line}: duplicate id {image_id!r} (first on line {first_line[image_id]}); "
                             "every train image must be listed once")
        first_line[image_id] = line
    raise ValueError(f"{path}: invalid rows")  # not reached: the bulk check and this loop agree


def read_train_csv(path: Union[str, Path]) -> pd.DataFrame:
    """Read ``train.csv`` (``id,landmark_id``; more columns are allowed), checking every row.

    Returns:
        DataFrame with columns ``id`` (str, at least 3 characters, unique) and ``landmark_id``
        (int64), in file order.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: naming the path, the line and the fix: an empty, header-only, binary or
            ragged file, a missing column, a short or repeated id, an id with a path separator,
            a non-integer landmark_id.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No train.csv at {path}: a GLR dataset needs DATA/train.csv with columns "
                                "id,landmark_id")
    rows_hint = "one row per train image"
    table = _read_csv_table(path, ("id", "landmark_id"), "id,landmark_id", rows_hint)
    if not table.num_rows:
        raise ValueError(f"{path} has no rows: expected {rows_hint} after the header 'id,landmark_id'")
    ids, values = table.columns["id"], table.columns["landmark_id"]
    labels = _train_labels_fast(ids, values)
    if labels is None:
        _raise_first_bad_train_row(table, ids, values)
    return pd.DataFrame({"id": pd.Series(ids, dtype=object), "landmark_id": labels})


def read_retrieval_solution_csv(path: Union[str, Path]) -> RetrievalSolution:
    """Read a GLR2021 solution file ``id,images[,Usage]`` (images: space-separated index ids).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: naming the path and the line: an empty, binary or ragged file, a missing
            column, a repeated id.
    """
    path = Path(path)
    table = _read_csv_table(path, ("id", "images"), "id,images[,Usage]", "one row per test image",
                            optional=("Usage",))
    ids, values = table.columns["id"], table.columns["images"]
    usages = table.columns.get("Usage")
    images: Dict[str, List[str]] = {}
    usage: Dict[str, str] = {}
    for n, (image_id, value) in enumerate(zip(ids, values)):
        if image_id in images:
            line = table.lines()[n]
            raise ValueError(f"{path}, line {line}: duplicate id {image_id!r}; every test image must be listed once")
        images[image_id] = value.split()
        if usages is not None:
            usage[image_id] = usages[n].strip() or "Public"
    return RetrievalSolution(images, usage)


def read_solution_csv(path: Union[str, Path]) -> Solution:
    """Read a Kaggle solution file ``id,landmarks[,Usage]`` (more columns are allowed).

    ``landmarks`` holds space-separated integer landmark ids and may be empty (no landmark);
    an empty or absent ``Usage`` means ``Public``. A header without rows is a valid, empty
    solution.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: naming the path, the line and the fix: an empty, binary or ragged file, a
            missing column, a repeated id, a ``landmarks`` field that is not integers.
    """
    path = Path(path)
    table = _read_csv_table(path, ("id", "landmarks"), "id,landmarks[,Usage]", "one row per test image",
                            optional=("Usage",))
    ids, values = table.columns["id"], table.columns["landmarks"]
    usages = table.columns.get("Usage")
    landmarks: Dict[str, List[int]] = {}
    usage: Dict[str, str] = {}
    first_line: Dict[str, int] = {}
    lines = table.lines() if table.num_rows else []
    for n, (line, image_id, value) in enumerate(zip(lines, ids, values)):
        if image_id in first_line:
            raise ValueError(f"{path}, line {line}: duplicate id {image_id!r} (first on line {first_line[image_id]}); "
                             "every test image must be listed once")
        first_line[image_id] = line
        parsed = [_parse_int(v) for v in value.split()]
        if any(v is None for v in parsed):
            raise ValueError(f"{path}, line {line}: landmarks {value!r} of id {image_id!r} must be space-separated "
                             "integers (or empty for a non-landmark image)")
        landmarks[image_id] = parsed  # type: ignore[assignment]
        if usages is not None:
            usage[image_id] = usages[n].strip() or "Public"
    return Solution(landmarks, usage)


@dataclass
class Solution:
    """Ground truth: landmark ids per test id (empty list = no landmark) and Kaggle's Usage."""

    landmarks: Dict[str, List[int]]
    usage: Dict[str, str] = field(default_factory=dict)

    def subset(self, usage: Optional[str]) -> Dict[str, List[int]]:
        """Ground truth restricted to one Usage (``Public``/``Private``); ``Ignored`` rows dropped."""
        return {
            k: v for k, v in self.landmarks.items()
            if self.usage.get(k, "Public") != "Ignored" and (usage is None or self.usage.get(k) == usage)
        }


@dataclass
class RetrievalSolution:
    """Ground truth of the retrieval task: relevant index ids per test id, and Kaggle's Usage."""

    images: Dict[str, List[str]]
    usage: Dict[str, str] = field(default_factory=dict)

    def subset(self, usage: Optional[str]) -> Dict[str, List[str]]:
        """Ground truth restricted to one Usage (``Public``/``Private``); ``Ignored`` rows dropped."""
        return {
            k: v for k, v in self.images.items()
            if self.usage.get(k, "Public") != "Ignored" and (usage is None or self.usage.get(k) == usage)
        }


_INT64_MAX = np.iinfo(np.int64).max


_INT64_MIN = np.iinfo(np.int64).min

"""Submission files, written and read with the ``csv`` module: GLR2020 ``id,landmarks``
(``landmark_id score`` per test image) and GLR2021 ``id,images`` (up to 100 index ids).

The submit step writes them; evaluate and the pipeline read them back (a broken row names the
file, the line and the fix).
"""
from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Collection, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from .atomic import write_csv_atomic
from .layout import Prediction

logger = logging.getLogger("landmark_retrieval")

MAX_IMAGES = 100  # GLR2021: at most 100 index ids per test image



def write_submission(predictions: Mapping[str, Prediction], test_ids: Sequence[str],
                     path: Union[str, Path]) -> Path:
    """Write ``id,landmarks`` rows for ``test_ids`` (ids without a prediction get an empty field)."""
    path = Path(path)
    if len(set(test_ids)) != len(test_ids):
        raise ValueError("Duplicate test ids: a submission has exactly one row per test image")
    rows = ((i, "" if predictions.get(i) is None else f"{int(predictions[i][0])} {float(predictions[i][1])!r}")
            for i in test_ids)
    return write_csv_atomic(path, ["id", "landmarks"], rows, lineterminator="\r\n")  # csv's default, as before


def read_csv_text(path: Path, not_text: str) -> str:
    """The text of a CSV file (UTF-8, an optional BOM dropped).

    Raises:
        ValueError: ``not_text`` and where the file stops being text: a NUL byte or a byte that
            is not UTF-8, with its line.
    """
    data = path.read_bytes()
    if b"\x00" in data:
        line = data[:data.index(b"\x00")].count(b"\n") + 1
        raise ValueError(f"{not_text}; it contains NUL bytes (line {line})")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ValueError(f"{not_text}; byte {data[exc.start:exc.start + 1]!r} on line {line} is not UTF-8") from None


def _data_rows(path: Path, header: Tuple[str, str]) -> Iterator[Tuple[int, str, str]]:
    """``(start line, test id, value)`` of every data row of a submission file, after checking its
    header.

    The file is UTF-8 (an optional BOM is skipped); blank lines are skipped, as Kaggle does.

    Raises:
        ValueError: naming the file (and the line) with the fix: a binary or non-UTF-8 file,
            malformed CSV (such as a field longer than the ``csv`` module's limit, usually an
            unclosed quote), a header other than ``header``, a row without exactly two fields, a
            test id that appears twice.
    """
    expected = ",".join(header)
    text = read_csv_text(path, f"{path} is not a UTF-8 CSV text file: expected a header '{expected}' and one "
                               "row per test image (write it as UTF-8 CSV)")
    reader = csv.reader(io.StringIO(text, newline=""))
    start, seen_header, ids = 1, False, set()
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1
            if not seen_header:
                if fields != list(header):
                    raise ValueError(f"{path}: header must be '{expected}', found {fields}")
                seen_header = True
            elif fields:
                if len(fields) != 2:
                    raise ValueError(f"{path}, line {line}: expected 2 fields ({expected}), found {len(fields)}")
                image_id, value = fields
                if image_id in ids:
                    raise ValueError(f"{path}, line {line}: test id {image_id!r} appears twice")
                ids.add(image_id)
                yield line, image_id, value
    except csv.Error as exc:
        raise ValueError(f"{path}, line {start}: malformed CSV ({exc}), often an unclosed quote; quote fields "
                         'that contain commas, quotes or newlines, and double the quotes inside them ("")') from None
    if not seen_header:
        raise ValueError(f"{path}: header must be '{expected}', found None (the file is empty)")


def read_submission(path: Union[str, Path]) -> Dict[str, Optional[Tuple[int, float]]]:
    """Read a GLR2020 submission, checking it as Kaggle does.

    Returns:
        ``{test id: (landmark_id, score) or None}`` (None: an empty ``landmarks`` field); scores
        are finite.

    Raises:
        ValueError: naming the file and the line, for a binary, non-UTF-8 or malformed file, a bad
            header, a repeated id, or a ``landmarks`` field that is not empty and not exactly
            ``"<int> <float>"`` with a finite score.
    """
    path = Path(path)
    out: Dict[str, Optional[Tuple[int, float]]] = {}
    for line, image_id, value in _data_rows(path, ("id", "landmarks")):
        tokens = value.split()
        if not tokens:
            out[image_id] = None
            continue
        if len(tokens) != 2:
            raise ValueError(f"{path}, line {line}: landmarks must be '<landmark_id> <score>', found {value!r}")
        try:
            label, score = int(tokens[0]), float(tokens[1])
        except ValueError:
            raise ValueError(f"{path}, line {line}: cannot parse {value!r} as '<int> <float>'") from None
        if not math.isfinite(score):
            raise ValueError(f"{path}, line {line}: score {tokens[1]!r} of test id {image_id!r} is not a finite "
                             "number; write the confidence as a number such as 0.93")
        out[image_id] = (label, score)
    return out


def write_retrieval_submission(rankings: Mapping[str, Sequence[str]], test_ids: Sequence[str],
                               path: Union[str, Path]) -> Path:
    """Write ``id,images`` rows for ``test_ids``: up to 100 index ids each, best first."""
    path = Path(path)
    if len(set(test_ids)) != len(test_ids):
        raise ValueError("Duplicate test ids: a submission has exactly one row per test image")
    rows = ((i, " ".join(list(rankings.get(i, []))[:MAX_IMAGES])) for i in test_ids)
    return write_csv_atomic(path, ["id", "images"], rows)


def read_retrieval_submission(path: Union[str, Path], index_ids: Optional[Collection[str]] = None,
                              ) -> Dict[str, List[str]]:
    """Read a GLR2021 submission, checking it as Kaggle does.

    Raises:
        ValueError: naming the file and the line, for a binary, non-UTF-8 or malformed file, a bad
            header, a repeated test id, more than 100 images, or (with ``index_ids``) an id that is
            not an index image.
    """
    path = Path(path)
    out: Dict[str, List[str]] = {}
    for line, image_id, value in _data_rows(path, ("id", "images")):
        images = value.split()
        if len(images) > MAX_IMAGES:
            raise ValueError(f"{path}, line {line}: {len(images)} images; at most {MAX_IMAGES} are allowed")
        if index_ids is not None:
            unknown = [i for i in images if i not in index_ids]
            if unknown:
                raise ValueError(f"{path}, line {line}: {unknown[0]!r} is not an index image")
        out[image_id] = images
    return out

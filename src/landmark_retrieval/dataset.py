"""GLR dataset layouts: recognition (GLR2020) and retrieval (GLR2021).

Recognition (Kaggle ``landmark-recognition-2020``)::

    DATA/train.csv                      id,landmark_id
    DATA/train/{a}/{b}/{c}/{id}.jpg     id = "abc..." (Kaggle ids are 16 hex characters)
    DATA/test/{a}/{b}/{c}/{id}.jpg      test ids = the image files found under test/
    DATA/solution.csv                   optional, Kaggle solution format: id,landmarks,Usage
                                        (landmarks = space-separated ints, possibly empty)

Retrieval (Kaggle ``landmark-retrieval-2021``): the database is ``index/``::

    DATA/index/{a}/{b}/{c}/{id}.jpg     index ids = the image files found under index/
    DATA/test/{a}/{b}/{c}/{id}.jpg
    DATA/train.csv + DATA/train/        optional: labelled images (label-aware re-ranking)
    DATA/solution.csv                   optional: id,images,Usage (images = space-separated
                                        relevant index ids, possibly empty)

The task is detected from the layout (an ``index/`` folder means retrieval) unless given.

The CSV files are read with the ``csv`` module (UTF-8; quoted ids may hold commas, quotes and
newlines; extra columns are allowed) and every problem raises an error naming the file, the line
and the fix. A ``solution.csv`` that cannot be read only disables scoring
(``Dataset.solution_error``). Scanning ``test/`` (and ``train/``) does not follow directory
symlinks and skips names that are not valid UTF-8, with a warning each.
"""
from __future__ import annotations

import csv
import io
import itertools
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from .layout import TASKS  # defined with the layout: the CLI reads it without loading pandas

logger = logging.getLogger("landmark_retrieval")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def image_path(root: Union[str, Path], split: str, image_id: str, suffix: str = ".jpg") -> Path:
    """Kaggle path of an image: ``root/split/id[0]/id[1]/id[2]/id.jpg``."""
    if len(image_id) < 3:
        raise ValueError(f"Image id {image_id!r} is shorter than 3 characters; GLR ids are 16 hex characters")
    return Path(root) / split / image_id[0] / image_id[1] / image_id[2] / f"{image_id}{suffix}"


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


@dataclass
class Dataset:
    """A GLR-layout dataset on disk (recognition or retrieval, see the module docstring)."""

    root: Path
    train: pd.DataFrame  # columns: id (str), landmark_id (int64); empty for retrieval without train.csv
    test_ids: List[str]
    solution: Optional[Union[Solution, RetrievalSolution]] = None
    #: why ``solution.csv`` could not be read (then ``solution`` is None); scoring raises it
    solution_error: Optional[str] = None
    task: str = "recognition"
    index_ids: List[str] = field(default_factory=list)
    _test_paths: Dict[str, Path] = field(default_factory=dict, repr=False)
    _train_paths: Optional[Dict[str, Path]] = field(default=None, repr=False)
    _index_paths: Dict[str, Path] = field(default_factory=dict, repr=False)

    @property
    def db_split(self) -> str:
        """The split test images are matched against: ``train`` (recognition) or ``index``."""
        return "index" if self.task == "retrieval" else "train"

    @property
    def has_train(self) -> bool:
        return len(self.train) > 0

    @property
    def train_ids(self) -> List[str]:
        return self.train["id"].tolist()

    def labels(self) -> Dict[str, int]:
        """train id -> landmark id."""
        return dict(zip(self.train["id"], self.train["landmark_id"].astype(int)))

    def path(self, split: str, image_id: str) -> Path:
        if split == "test" and image_id in self._test_paths:
            return self._test_paths[image_id]
        if split == "index" and image_id in self._index_paths:
            return self._index_paths[image_id]
        if split == "train" and self._train_paths and image_id in self._train_paths:
            return self._train_paths[image_id]
        return image_path(self.root, split, image_id)

    def train_on_disk(self) -> Dict[str, Path]:
        """Train id -> path of the train images that exist under ``train/`` (scanned once).

        Kaggle's re-run environment ships only the train images of the private test set's
        landmarks, so ``train.csv`` may list many more ids than there are files.
        """
        if self._train_paths is None:
            self._train_paths = find_images(self.root / "train")
        return self._train_paths

    def ids(self, split: str) -> List[str]:
        if split == "train":
            return self.train_ids
        if split == "test":
            return list(self.test_ids)
        if split == "index":
            return list(self.index_ids)
        raise ValueError(f"Unknown split {split!r}; expected 'train', 'index' or 'test'")


_INT_RE = re.compile(r"[+-]?[0-9]+")
_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min


def _parse_int(text: str) -> Optional[int]:
    """``text`` (surrounding spaces allowed) as an int64, or None when it is not one."""
    text = text.strip()
    if not _INT_RE.fullmatch(text):
        return None
    value = int(text)
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
    data = path.read_bytes()
    not_text = (f"{path} is not a UTF-8 CSV text file: expected a header '{header_hint}' and {rows_hint} "
                "(re-export it as UTF-8 CSV)")
    if b"\x00" in data:
        line = data[:data.index(b"\x00")].count(b"\n") + 1
        raise ValueError(f"{not_text}; it contains NUL bytes (line {line})")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ValueError(f"{not_text}; byte {data[exc.start:exc.start + 1]!r} on line {line} is not UTF-8") from None
    del data
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


def _is_utf8(name: str) -> bool:
    """False for a name ``os`` decoded with surrogate escapes (bytes that are not UTF-8)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def find_images(directory: Union[str, Path]) -> Dict[str, Path]:
    """Map id -> path for every image file under ``directory`` (id = file stem), sorted by path.

    ``directory`` itself may be a symlink, and so may the image files, but directory symlinks
    below it are not followed (one warning each): a link back to the dataset root would make
    train images test ids, and a link loop would never end. Names that are not valid UTF-8 are
    skipped with a warning (as are unreadable folders), so they cannot break the run later.

    Returns:
        ``{id: path}``; empty when ``directory`` does not exist.
    """
    found: Dict[str, Path] = {}

    def unreadable(exc: OSError) -> None:
        logger.warning("Cannot list %s (%s): its images are left out", exc.filename, exc.strerror or exc)

    for dirpath, dirnames, filenames in os.walk(directory, onerror=unreadable):
        keep = []
        for name in sorted(dirnames):
            sub = os.path.join(dirpath, name)
            if not _is_utf8(name):
                logger.warning("Skipping folder %r in %s: its name is not valid UTF-8 (rename it)",
                               os.fsencode(name), os.fsencode(dirpath))
            elif os.path.islink(sub):
                logger.warning("Skipping directory symlink %s -> %s: symlinked folders are not followed "
                               "(replace the link by the folder or its files)", sub, os.readlink(sub))
            else:
                keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            stem, suffix = os.path.splitext(name)
            if suffix not in IMAGE_SUFFIXES:
                continue
            if not _is_utf8(name):
                logger.warning("Skipping image %r in %s: its file name is not valid UTF-8 (rename it)",
                               os.fsencode(name), os.fsencode(dirpath))
                continue
            p = Path(dirpath) / name
            if stem in found:
                logger.warning("Image id %s appears twice (%s, %s); keeping the first", stem, found[stem], p)
                continue
            found[stem] = p
    return found


def detect_task(root: Union[str, Path]) -> str:
    """``retrieval`` when ``root`` has an ``index/`` folder, else ``recognition``."""
    return "retrieval" if (Path(root) / "index").is_dir() else "recognition"


def load_dataset(root: Union[str, Path], task: Optional[str] = None) -> Dataset:
    """Load a GLR-layout dataset (see the module docstring).

    Args:
        root: the dataset folder.
        task: ``recognition`` or ``retrieval``; None detects it from the layout.

    A ``solution.csv`` that cannot be read does not raise: the dataset gets ``solution=None``
    and the message in ``solution_error`` (logged once as an error), so that the submission is
    still written; :func:`~landmark_retrieval.evaluate.evaluate_run` raises it.

    Raises:
        FileNotFoundError: no dataset folder, ``train.csv`` or ``test/`` folder.
        ValueError: a malformed ``train.csv`` (see :func:`read_train_csv`).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Dataset directory {root} does not exist")
    task = task or detect_task(root)
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; expected one of {TASKS}")
    index_paths: Dict[str, Path] = {}
    if task == "retrieval":
        if not (root / "index").is_dir():
            raise FileNotFoundError(f"No index/ folder in {root}: a retrieval dataset has index images in "
                                    f"{root / 'index'}/a/b/c/<id>.jpg (or use --task recognition)")
        index_paths = find_images(root / "index")
        has_csv = (root / "train.csv").exists()
        train = read_train_csv(root / "train.csv") if has_csv else pd.DataFrame(
            {"id": pd.Series([], dtype=object), "landmark_id": pd.Series([], dtype="int64")})
    else:
        train = read_train_csv(root / "train.csv")
    test_dir = root / "test"
    if not test_dir.is_dir():
        raise FileNotFoundError(f"No test/ folder in {root}: test images go in {test_dir}/a/b/c/<id>.jpg")
    test_paths = find_images(test_dir)
    solution_path = root / "solution.csv"
    solution: Optional[Solution] = None
    solution_error: Optional[str] = None
    if solution_path.exists() or solution_path.is_symlink():  # a dangling link is an error too
        try:
            solution = (read_retrieval_solution_csv if task == "retrieval" else read_solution_csv)(solution_path)
        except (ValueError, OSError) as exc:  # never stops the run: only scoring needs it
            solution_error = str(exc)
            logger.error("Cannot read %s, the run will not be scored: %s", solution_path, solution_error)
    logger.info(
        "Dataset %s (%s): %s%d train images (%d landmarks), %d test images%s", root, task,
        f"{len(index_paths)} index images, " if task == "retrieval" else "",
        len(train), train["landmark_id"].nunique(), len(test_paths),
        ", with solution.csv" if solution else "",
    )
    return Dataset(root=root, train=train, test_ids=list(test_paths), solution=solution,
                   solution_error=solution_error, task=task, index_ids=list(index_paths),
                   _test_paths=test_paths, _index_paths=index_paths)

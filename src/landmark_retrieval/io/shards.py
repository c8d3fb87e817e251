"""Sharded extraction: which images a part holds, and merging parts into one work directory.

``landmark-retrieval extract --shard i/n --work Wi`` extracts the i-th of n parts of every split
(:func:`shard_of`: the SHA-256 of the image id modulo n, the same on every machine and Python,
never ``hash()``), so n machines or n Kaggle notebooks extract a part each, into their own work
directory. ``landmark-retrieval merge --work FINAL W0 W1 ...`` (:func:`merge`) puts their
feature shards into FINAL; ``landmark-retrieval run --work FINAL`` then extracts whatever is still
missing (a part not merged, say), fits the codebook of aggregating backends (VLAD) on all the
images, and gives results identical to a single-machine run.

Only extraction shards (``part-*.h5``) are merged; a codebook and the global descriptors made
with it (``vlad-*.h5``) depend on every database image, so they are never taken from a part and
are dropped from FINAL when a merge adds images (``run`` computes them again). Parts extracted
with different settings (their ``meta.json`` stamps differ) are refused, naming the settings.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .atomic import fsync_dir, publish, write_error, write_text_atomic
from .layout import ALL_SPLITS, config_path, feature_dir, shard_record_path
from .store import FeatureStore, read_meta, shard_counts, shard_image_ids, validate_shard, write_meta

logger = logging.getLogger("landmark_retrieval")


PathLike = Union[str, Path]
Shard = Tuple[int, int]  # (index, count): the index-th of count parts, 0 <= index < count
LINK_MODES = ("copy", "symlink", "hardlink")
_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: Union[str, Sequence[int]], where: str = "shard") -> Shard:
    """``"1/4"`` (or ``(1, 4)``) -> ``(1, 4)``: part 1 of 4 (parts are numbered from 0).

    Raises:
        ValueError: not ``I/N`` with 0 <= I < N (the message names ``where`` and shows the form).
    """
    if isinstance(text, str):
        m = _SHARD_RE.match(text)
        values = (int(m.group(1)), int(m.group(2))) if m else None
    else:
        values = tuple(int(v) for v in text) if len(text) == 2 else None  # type: ignore[assignment]
    if values is None or not 0 <= values[0] < values[1]:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}expected I/N with 0 <= I < N (parts are numbered from 0), e.g. 0/4 ... 3/4, "
                         f"got {text!r}")
    return values[0], values[1]


def shard_of(image_id: str, count: int) -> int:
    """The part (0 .. count-1) an image belongs to: SHA-256 of its id (UTF-8) modulo ``count``."""
    digest = hashlib.sha256(image_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % count


def shard_ids(ids: Iterable[str], shard: Shard) -> List[str]:
    """The ids of part ``shard = (i, n)``, in their order."""
    index, count = parse_shard(shard)
    return [i for i in ids if shard_of(i, count) == index]


def write_shard_record(work: PathLike, shard: Shard) -> Path:
    """Record in ``WORK/shard.json`` that the work directory holds part ``shard``."""
    return write_text_atomic(shard_record_path(work), json.dumps({"shard": shard[0], "count": shard[1]}) + "\n")


def read_shard_record(work: PathLike) -> Optional[Shard]:
    """The part a work directory holds (``extract --shard``), or None (unsharded or unknown)."""
    path = shard_record_path(work)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return parse_shard((record["shard"], record["count"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class MergeResult:
    """What :func:`merge` did."""

    work: Path
    added: Dict[str, int] = field(default_factory=dict)  # split -> shard files added
    images: Dict[str, int] = field(default_factory=dict)  # split -> images they record
    already: int = 0  # shard files merged before (skipped)
    damaged: int = 0  # shard files that failed validation (skipped: `run` extracts their images)
    parts: List[Shard] = field(default_factory=list)  # the parts merged (from their shard.json)
    missing_parts: List[int] = field(default_factory=list)  # parts of n that were not given

    def __str__(self) -> str:
        splits = ", ".join(f"{s}: {self.images[s]} images in {n} shard file(s)" for s, n in self.added.items()) \
            or "nothing new"
        extra = f"; {self.already} shard file(s) were already there" if self.already else ""
        if self.damaged:
            extra += f"; {self.damaged} damaged shard file(s) skipped"
        if self.missing_parts:
            count = self.parts[0][1] if self.parts else 0
            parts = ", ".join(f"{i}/{count}" for i in self.missing_parts)
            extra += f"; part(s) {parts} not merged (`run` extracts them)"
        return f"Merged into {self.work}: {splits}{extra}"


def _flat(values: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in values.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(_flat(value, where))
        else:
            out[where] = value
    return out


def _differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    fa, fb = _flat(a), _flat(b)
    keys = [k for k in {**fa, **fb} if fa.get(k) != fb.get(k)]
    return "; ".join(f"{k}: {fa.get(k)!r} vs {fb.get(k)!r}" for k in keys)


def _link(src: Path, dst: Path, mode: str) -> None:
    """Put ``src`` at ``dst`` completely or not at all (``dst`` appears by a rename)."""
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        if mode == "copy":
            shutil.copyfile(src, tmp)
            publish(tmp, dst)
            return
        if mode == "symlink":
            os.symlink(src.resolve(), tmp)
        else:
            os.link(src, tmp)
        os.replace(tmp, dst)
        fsync_dir(dst.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if mode == "hardlink" and exc.errno == 18:  # EXDEV: another file system
            raise OSError(exc.errno, f"Cannot hard-link {src} into {dst.parent}: another file system; use "
                                     "--link copy or --link symlink") from None
        raise write_error(dst, exc) from exc


def _drop_derived(work: Path) -> List[str]:
    """Remove what was computed from the merged images (codebook, VLAD descriptors): it is stale."""
    dropped = []
    for split in ALL_SPLITS:
        directory = feature_dir(work, split)
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.h5")):
            if path.name == "codebook.h5" or ("-" in path.name and not path.name.startswith("part-")):
                path.unlink()
                dropped.append(f"{split}/{path.name}")
    if dropped:
        logger.info("Dropped %d file(s) computed from fewer images (%s): `run` computes them again on all images",
                    len(dropped), ", ".join(dropped[:4]) + (" ..." if len(dropped) > 4 else ""))
    return dropped


def merge(work: PathLike, sources: Sequence[PathLike], link: str = "copy") -> MergeResult:
    """Merge the feature stores of several work directories (parts of a sharded extraction) into ``work``.

    Args:
        work: the work directory to merge into (created; may already hold merged parts: a part
            merged twice is skipped).
        sources: work directories written by ``extract --shard i/n`` (or any extraction).
        link: ``copy`` the shard files, or ``symlink`` / ``hardlink`` them (no copy; the sources
            must then stay where they are, e.g. Kaggle's read-only ``/kaggle/input``).

    Every source's stores must have been extracted with the same settings (``meta.json``) as the
    others and as ``work``'s; an image may be in one source only. ``work`` gets the first
    source's ``config.json`` when it has none, so ``run --work WORK`` continues with its settings.

    Raises:
        ValueError: settings that differ (named), parts of different ``n``, an image in two sources.
        FileNotFoundError: a source without features.
    """
    work = Path(work)
    if link not in LINK_MODES:
        raise ValueError(f"--link: expected one of {', '.join(LINK_MODES)}, got {link!r}")
    sources = [Path(s) for s in sources]
    if not sources:
        raise ValueError("merge needs at least one work directory to merge from")
    seen_paths: Dict[Path, Path] = {}
    for source in sources:
        earlier = seen_paths.setdefault(source.resolve(), source)
        if earlier is not source:
            raise ValueError(f"{source} is given twice: give each part once")
    for source in sources:
        if not (source / "features").is_dir():
            raise FileNotFoundError(f"{source} holds no features: run `landmark-retrieval extract --shard I/N --work "
                                    f"{source}` first (or check the path)")
        if source.resolve() == work.resolve():
            raise ValueError(f"{source} is the work directory merged into: give the parts' work directories only")
    result = MergeResult(work=work)
    _check_parts(sources, result)

    plans: List[Tuple[str, Path, Path, List[str]]] = []  # (split, source shard, target, ids)
    for split in ALL_SPLITS:
        plans.extend(_plan_split(work, sources, split, result))
    if plans:
        _drop_derived(work)
    for split, src, target, ids in plans:
        target.parent.mkdir(parents=True, exist_ok=True)
        _link(src, target, link)
        result.added[split] = result.added.get(split, 0) + 1
        result.images[split] = result.images.get(split, 0) + len(ids)
    for split in ALL_SPLITS:  # the stamp last: written after what it describes
        meta = next((read_meta(feature_dir(s, split)) for s in sources if read_meta(feature_dir(s, split))), None)
        if meta is not None:
            write_meta(feature_dir(work, split), meta)
    if not config_path(work).is_file():
        first = next((s for s in sources if config_path(s).is_file()), None)
        if first is not None:
            write_text_atomic(config_path(work), config_path(first).read_text(encoding="utf-8"))
            logger.info("%s continues with the settings of %s (its config.json)", work, first)
    logger.debug("%s", result)
    return result


def _check_parts(sources: Sequence[Path], result: MergeResult) -> None:
    records = {source: read_shard_record(source) for source in sources}
    counts = {r[1] for r in records.values() if r is not None}
    if len(counts) > 1:
        listed = ", ".join(f"{s} ({r[0]}/{r[1]})" for s, r in records.items() if r is not None)
        raise ValueError(f"The work directories hold parts of different splittings: {listed}. Extract every part with "
                         "the same N in --shard I/N")
    seen: Dict[int, Path] = {}
    for source, record in records.items():
        if record is None:
            continue
        if record[0] in seen:
            raise ValueError(f"{seen[record[0]]} and {source} both hold part {record[0]}/{record[1]}: "
                             "give each part once")
        seen[record[0]] = source
        result.parts.append(record)
    if counts:
        count = counts.pop()
        result.missing_parts = sorted(set(range(count)) - set(seen))
        if result.missing_parts:
            logger.warning("Part(s) %s of %d are not among the merged work directories: `run` on %s extracts their "
                           "images itself", ", ".join(map(str, result.missing_parts)), count, result.work)


def _plan_split(work: Path, sources: Sequence[Path], split: str,
                result: MergeResult) -> List[Tuple[str, Path, Path, List[str]]]:
    """The shard files of one split to add to ``work``, after every check."""
    dirs = [(s, feature_dir(s, split)) for s in sources if feature_dir(s, split).is_dir()]
    if not dirs:
        return []
    metas = []
    for source, directory in dirs:
        meta = read_meta(directory)
        if meta is None:
            if any(directory.glob("part-*.h5")):
                raise ValueError(f"{directory} has feature shards but no meta.json (the settings they were made with): "
                                 "extract that part again")
            continue
        metas.append((source, meta))
    for source, meta in metas[1:]:
        if meta != metas[0][1]:
            raise ValueError(f"The {split} features of {metas[0][0]} and {source} were extracted with different "
                             f"settings ({_differences(metas[0][1], meta)}): extract every part with the same "
                             "--preset/--set (and model), or merge them into different work directories")
    final_dir = feature_dir(work, split)
    final_meta = read_meta(final_dir)
    if metas and final_meta is not None and final_meta != metas[0][1]:
        raise ValueError(f"The {split} features already in {work} were extracted with other settings than "
                         f"{metas[0][0]}'s ({_differences(final_meta, metas[0][1])}): merge into a new --work "
                         "directory")

    owner: Dict[str, str] = {}
    plans = []
    for source, directory in dirs:
        for path in sorted(directory.glob("part-*.h5")):
            problem = validate_shard(path)
            if problem is not None:
                logger.warning("Skipping damaged shard %s (%s): `run` extracts its images again", path, problem)
                result.damaged += 1
                continue
            ids = shard_image_ids(path)
            counts = shard_counts(path)
            tag = hashlib.sha1(f"{path.name}\n{sorted(counts.items())}\n{chr(10).join(ids)}".encode(
                "utf-8", "surrogatepass")).hexdigest()[:16]
            target = final_dir / f"part-m{tag}.h5"
            for image_id in ids:
                other = owner.setdefault(image_id, str(source))
                if other != str(source):
                    raise ValueError(f"Image {image_id!r} ({split}) is in both {other} and {source}: the work "
                                     "directories overlap (the same --shard twice, or a whole run among parts); "
                                     "merge each part once")
            if target.is_file():
                result.already += 1
                continue
            plans.append((split, path, target, ids))
    if final_dir.is_dir() and plans:
        with FeatureStore(final_dir) as store:
            present = set(store.local_ids) | set(store.global_ids) | set(store.failures)
        clash = sorted(present & {i for _, _, _, ids in plans for i in ids})
        if clash:
            raise ValueError(f"Image {clash[0]!r} ({split}) and {len(clash) - 1} other(s) are already in {work} "
                             "(extracted there, or merged from another directory): leave out the part that holds "
                             "them, or merge into a new --work directory")
    return plans

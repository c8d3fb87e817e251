"""Sharded extraction (extract --shard I/N) and merging parts (merge): the merged run is the run."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import pytest

from landmark_retrieval.cli import main
from landmark_retrieval.io.dataset import load_dataset
from landmark_retrieval.io.shards import merge, parse_shard, shard_ids, shard_of
from landmark_retrieval.io.store import FeatureStore

ARTIFACTS = ("retrieval.h5", "verification.csv")


def test_shard_of_is_sha256_of_the_id_modulo_n():
    # SHA-256("abc") starts with ba7816bf8f01cfea: big-endian 13436514500253700074
    assert shard_of("abc", 1000) == 13436514500253700074 % 1000 == 74
    assert shard_of("abc", 1) == 0
    assert [shard_of(i, 4) for i in ("0000059611c7d079", "abc", "é")] == [2, 2, 3]


def test_parts_are_disjoint_and_cover_every_id():
    ids = [f"{i:016x}" for i in range(1000)]
    parts = [shard_ids(ids, (i, 3)) for i in range(3)]
    assert sorted(sum(parts, [])) == ids
    assert all(280 < len(p) < 390 for p in parts), [len(p) for p in parts]  # ~1/3 each
    assert parts[1] == [i for i in ids if i in set(parts[1])]  # input order kept


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/b", "1/0", ""])
def test_bad_shards_name_the_form(text):
    with pytest.raises(ValueError, match=r"shard: expected I/N with 0 <= I < N"):
        parse_shard(text)
    assert parse_shard(" 1 / 3 ") == (1, 3)


def _run(data: Path, work: Path, out: Path) -> None:
    assert main(["run", "--data", str(data), "--work", str(work), "--out", str(out), "--preset", "demo",
                 "--workers", "1", "-q"]) == 0


@pytest.fixture(scope="module")
def reference(small_dataset, tmp_path_factory) -> Dict[str, bytes]:
    root = tmp_path_factory.mktemp("shards_reference")
    _run(small_dataset, root / "work", root / "submission.csv")
    out = {name: (root / "work" / name).read_bytes() for name in ARTIFACTS}
    out["submission.csv"] = (root / "submission.csv").read_bytes()
    out["work"] = str(root / "work")  # type: ignore[assignment]
    return out


@pytest.fixture(scope="module")
def parts(small_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    for i in range(2):
        assert main(["extract", "--data", str(small_dataset), "--work", str(root / f"w{i}"), "--preset", "demo",
                     "--shard", f"{i}/2", "-q"]) == 0
    return root / "w0", root / "w1"


def _ids(store_dir: Path) -> set:
    with FeatureStore(store_dir) as store:
        return set(store.local_ids) | set(store.global_ids) | set(store.failures)


def test_two_parts_merged_give_the_single_machine_results(small_dataset, reference, parts, tmp_path):
    ds = load_dataset(small_dataset)
    w0, w1 = parts
    for split, ids in (("train", ds.train_ids), ("test", ds.test_ids)):
        a, b = _ids(w0 / "features" / split), _ids(w1 / "features" / split)
        assert not a & b and a | b == set(ids)
        assert a == set(shard_ids(ids, (0, 2)))
    for w in parts:  # no codebook from part of the train images
        assert not (w / "features" / "train" / "codebook.h5").exists()
        assert not list((w / "features").glob("*/vlad-*.h5"))
        assert json.loads((w / "shard.json").read_text())["count"] == 2

    final = tmp_path / "final"
    assert main(["merge", "--work", str(final), str(w0), str(w1)]) == 0
    assert (final / "config.json").read_text() == (w0 / "config.json").read_text()
    assert _ids(final / "features" / "train") == set(ds.train_ids)
    meta = Path("features") / "train" / "meta.json"
    assert (final / meta).read_text() == (w0 / meta).read_text()
    result = merge(final, [w0, w1])  # merging again adds nothing
    assert result.added == {} and result.already == 4

    _run(small_dataset, final, tmp_path / "submission.csv")
    for name in ARTIFACTS:
        assert (final / name).read_bytes() == reference[name], name
    assert (tmp_path / "submission.csv").read_bytes() == reference["submission.csv"]


def test_symlinked_parts_and_a_missing_part(small_dataset, reference, parts, tmp_path, caplog):
    w0, _ = parts
    final = tmp_path / "final"
    result = merge(final, [w0], link="symlink")
    assert result.missing_parts == [1] and "Part(s) 1 of 2 are not among the merged" in caplog.text
    assert all(p.is_symlink() for p in (final / "features" / "train").glob("part-*.h5"))
    _run(small_dataset, final, tmp_path / "submission.csv")  # extracts part 1 itself
    assert (tmp_path / "submission.csv").read_bytes() == reference["submission.csv"]
    for name in ARTIFACTS:
        assert (final / name).read_bytes() == reference[name], name


def test_a_whole_run_merged_loses_its_codebook_and_gives_the_same_results(small_dataset, reference, tmp_path):
    source = Path(reference["work"])  # type: ignore[arg-type]
    assert (source / "features" / "train" / "codebook.h5").is_file()
    final = tmp_path / "final"
    merge(final, [source])
    assert not (final / "features" / "train" / "codebook.h5").exists()
    assert {p.name[:5] for p in (final / "features").glob("*/*.h5")} == {"part-"}
    _run(small_dataset, final, tmp_path / "submission.csv")
    assert (tmp_path / "submission.csv").read_bytes() == reference["submission.csv"]


def test_parts_with_other_settings_are_refused(small_dataset, parts, tmp_path, caplog):
    w0, _ = parts
    other = tmp_path / "other"
    assert main(["extract", "--data", str(small_dataset), "--work", str(other), "--preset", "demo", "--shard", "1/2",
                 "--set", "extract.sift.max_keypoints=500", "-q"]) == 0
    final = tmp_path / "final"
    assert main(["merge", "--work", str(final), str(w0), str(other)]) == 2
    assert "were extracted with different settings (sift.max_keypoints: 1000 vs 500)" in caplog.text
    assert not (final / "features").exists()  # refused before anything is written

    with pytest.raises(ValueError, match="given twice"):
        merge(final, [w0, w0])
    with pytest.raises(ValueError, match="both hold part 0/2"):
        three = tmp_path / "copy_of_w0"
        merge(tmp_path / "scratch", [w0, _copy(w0, three)])
    with pytest.raises(FileNotFoundError, match="holds no features"):
        merge(final, [tmp_path / "nope"])


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_overlapping_work_directories_are_refused(small_dataset, reference, parts, tmp_path):
    w0, _ = parts
    whole = Path(reference["work"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"is in both .* the work directories overlap"):
        merge(tmp_path / "final", [w0, whole])

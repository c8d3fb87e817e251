"""Library functions check their inputs: knn, estimate_homography and the metrics.

Each wrong argument raises TypeError/ValueError saying what was expected and naming the argument
(shape, dtype, row, key), instead of a bare assertion from a C extension or a silently wrong score.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from landmark_retrieval import metrics
from landmark_retrieval.config import VerifyConfig
from landmark_retrieval.io.tables import Solution
from landmark_retrieval.matching.pairs import estimate_homography
from landmark_retrieval.metrics import (
    global_average_precision,
    mean_average_precision,
    relevant_train_images,
    score_predictions,
    top1_accuracy,
)
from landmark_retrieval.search.exact import knn


def _unit(rng, n: int, d: int = 8) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# retrieve.knn
# ---------------------------------------------------------------------------------------------
def test_knn_rejects_non_arrays(rng):
    db = _unit(rng, 4)
    with pytest.raises(TypeError) as info:
        knn([[1.0, 0.0]], db, 1)
    assert str(info.value) == "knn: queries must be a numpy array (rows = descriptors), not list"
    with pytest.raises(TypeError) as info:
        knn(db, ((1.0,) * 8,), 1)
    assert str(info.value) == "knn: database must be a numpy array (rows = descriptors), not tuple"


@pytest.mark.parametrize("shape", [(8,), (2, 3, 8), ()])
def test_knn_rejects_arrays_that_are_not_2d(rng, shape):
    db = _unit(rng, 4)
    with pytest.raises(ValueError) as info:
        knn(np.zeros(shape, np.float32), db, 1)
    assert str(info.value) == f"knn: queries must be a 2-D array (rows = descriptors), got shape {shape}"
    with pytest.raises(ValueError) as info:
        knn(db, np.zeros(shape, np.float32), 1)
    assert str(info.value) == f"knn: database must be a 2-D array (rows = descriptors), got shape {shape}"


@pytest.mark.parametrize("dtype", [np.int64, np.uint8, bool, object, np.complex64])
def test_knn_rejects_non_float_dtypes(rng, dtype):
    db = _unit(rng, 4)
    with pytest.raises(TypeError) as info:
        knn(db.astype(dtype), db, 1)
    assert str(info.value) == f"knn: queries must have dtype float16, float32 or float64, got {np.dtype(dtype)}"


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_knn_accepts_float_dtypes_and_numpy_integer_k(rng, dtype):
    q, db = _unit(rng, 3), _unit(rng, 10)
    expected = knn(q, db, 4, use_faiss=False)[1]
    for k in (4, np.int32(4), np.int64(4), np.uint8(4)):
        s, i = knn(q.astype(dtype), db.astype(dtype), k, use_faiss=False)
        assert s.dtype == np.float32 and i.dtype == np.int64 and i.shape == (3, 4)
        if dtype != np.float16:
            assert np.array_equal(i, expected)


def test_knn_checks_k(rng):
    q, db = _unit(rng, 2), _unit(rng, 5)
    with pytest.raises(ValueError) as info:
        knn(q, db, -1)
    assert str(info.value) == "knn: k must be >= 0, got -1"
    for k, shown in ((2.0, "float 2.0"), ("3", "str '3'"), (True, "bool True"), (None, "NoneType None"),
                     (np.float32(2), f"float32 {np.float32(2)!r}")):
        with pytest.raises(TypeError) as info:
            knn(q, db, k)
        assert str(info.value) == f"knn: k must be an integer, not {shown}"


@pytest.mark.parametrize("use_faiss", [False, True])
def test_knn_rejects_nan_and_inf_rows(rng, use_faiss):
    q, db = _unit(rng, 6), _unit(rng, 5)
    q[3, 2] = np.nan
    q[5, 0] = np.inf
    with pytest.raises(ValueError) as info:
        knn(q, db, 2, use_faiss=use_faiss)
    assert str(info.value) == ("knn: queries row 3 has NaN or inf values (2 bad row(s) of 6); "
                               "fix or drop those descriptors")
    db[1, 7] = -np.inf
    with pytest.raises(ValueError) as info:
        knn(_unit(rng, 2), db.astype(np.float16), 2, use_faiss=use_faiss)
    assert str(info.value) == ("knn: database row 1 has NaN or inf values (1 bad row(s) of 5); "
                               "fix or drop those descriptors")


def test_knn_finds_bad_rows_beyond_the_first_check_block(rng):
    """The NaN check works in blocks (bounded memory): a bad row far in the database is found."""
    d = 4096  # 4096 rows per checked block
    db = np.zeros((9000, d), np.float16)
    db[:, 0] = 1
    db[8500, 5] = np.nan
    db[4100, 1] = np.inf
    with pytest.raises(ValueError, match=r"knn: database row 4100 has NaN or inf values \(2 bad row\(s\) of 9000\)"):
        knn(np.ones((1, d), np.float32), db, 3)


def test_knn_empty_inputs_keep_their_shapes(rng):
    q, db = _unit(rng, 3), _unit(rng, 5)
    for queries, database, k, shape in (
        (np.zeros((0, 8), np.float32), db, 4, (0, 4)),
        (q, np.zeros((0, 8), np.float32), 4, (3, 0)),
        (q, db, 0, (3, 0)),
        (np.zeros((0, 8), np.float64), np.zeros((0, 8), np.float16), 2, (0, 0)),
        (np.zeros((0, 8), np.float32), db, 0, (0, 0)),
    ):
        s, i = knn(queries, database, k)
        assert s.shape == shape and i.shape == shape and s.dtype == np.float32 and i.dtype == np.int64


# ---------------------------------------------------------------------------------------------
# verify.estimate_homography
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape0, shape1", [
    ((10, 2), (9, 2)),  # different K
    ((10, 3), (10, 3)),  # not (x, y)
    ((20,), (20,)),  # flat
    ((10, 2, 1), (10, 2, 1)),
    ((0,), (0, 2)),
])
def test_estimate_homography_names_the_shapes(shape0, shape1):
    with pytest.raises(ValueError) as info:
        estimate_homography(np.zeros(shape0), np.zeros(shape1), VerifyConfig())
    assert str(info.value) == ("estimate_homography: kpts0 and kpts1 must be (K, 2) arrays of matched (x, y) "
                               f"points with the same K, got shapes {shape0} and {shape1}")


def test_estimate_homography_accepts_matching_shapes(rng):
    H, mask = estimate_homography(np.zeros((0, 2)), np.zeros((0, 2)), VerifyConfig())
    assert H is None and mask.shape == (0,)
    a = rng.uniform(0, 100, (30, 2))
    H, mask = estimate_homography(a.tolist(), (a + 5).tolist(), VerifyConfig())  # lists of pairs work too
    assert mask.shape == (30,) and mask.all() and np.allclose(H[:2, 2], 5, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def test_metrics_module_does_no_file_io():
    source = inspect.getsource(metrics)
    for word in ("open(", "read_", "write", "pathlib", "import os", "json", "csv"):
        assert word not in source, word


def test_map_rejects_strings_and_non_mappings():
    relevant = {"q1": ["a", "b"]}
    with pytest.raises(TypeError) as info:
        mean_average_precision({"q1": "ab"}, relevant)
    assert str(info.value) == "predictions['q1'] must be a list of ids, not a string ('ab')"
    with pytest.raises(TypeError) as info:
        mean_average_precision({"q1": ["a"]}, {"q1": b"ab"})
    assert str(info.value) == "relevant['q1'] must be a list of ids, not a string (b'ab')"
    with pytest.raises(TypeError) as info:
        mean_average_precision({"q1": 7}, relevant)
    assert str(info.value) == "predictions['q1'] must be a list of ids, not int"
    with pytest.raises(TypeError) as info:
        mean_average_precision([("q1", ["a"])], relevant)
    assert str(info.value) == "predictions must be a mapping (dict) of query id -> retrieved ids, not list"
    with pytest.raises(TypeError) as info:
        mean_average_precision({}, None)
    assert str(info.value) == "relevant must be a mapping (dict) of query id -> relevant ids, not NoneType"


def test_map_checks_max_predictions_and_accepts_arrays():
    preds, relevant = {"q": ["a", "x"]}, {"q": ["a"]}
    for bad in (0, -3):
        with pytest.raises(ValueError) as info:
            mean_average_precision(preds, relevant, bad)
        assert str(info.value) == f"max_predictions must be a positive int, got {bad}"
    for bad, shown in ((1.5, "float 1.5"), (True, "bool True"), ("100", "str '100'")):
        with pytest.raises(TypeError) as info:
            mean_average_precision(preds, relevant, bad)
        assert str(info.value) == f"max_predictions must be a positive int, not {shown}"
    assert mean_average_precision({"q": np.array(["x", "a"])}, {"q": ("a",)}, np.int64(2)) == 0.5


@pytest.mark.parametrize("metric", [global_average_precision, top1_accuracy])
def test_gap_and_top1_check_predictions(metric):
    solution = {"a": [1], "b": [2]}
    cases = [
        ("1 0.5", TypeError, "predictions['a'] must be None or a (landmark_id, score) pair, not '1 0.5'"),
        ((1,), TypeError, "predictions['a'] must be None or a (landmark_id, score) pair, not (1,)"),
        ((1, 0.5, 0), TypeError, "predictions['a'] must be None or a (landmark_id, score) pair, not (1, 0.5, 0)"),
        (7, TypeError, "predictions['a'] must be None or a (landmark_id, score) pair, not 7"),
        (("1", 0.5), TypeError, "predictions['a']: landmark_id must be an integer, not str '1'"),
        ((1.0, 0.5), TypeError, "predictions['a']: landmark_id must be an integer, not float 1.0"),
        ((True, 0.5), TypeError, "predictions['a']: landmark_id must be an integer, not bool True"),
        ((1, "0.5"), TypeError, "predictions['a']: score must be a float, not str '0.5'"),
        ((1, None), TypeError, "predictions['a']: score must be a float, not NoneType None"),
        ((1, float("nan")), ValueError, "predictions['a']: score must be finite, got nan"),
        ((1, -np.inf), ValueError, "predictions['a']: score must be finite, got -inf"),
    ]
    for pred, error, message in cases:
        with pytest.raises(error) as info:
            metric({"a": pred, "b": None}, solution)
        assert str(info.value) == message, pred
    with pytest.raises(TypeError) as info:
        metric([("a", (1, 0.5))], solution)
    assert str(info.value) == ("predictions must be a mapping (dict) of test id -> (landmark_id, score) or None, "
                               "not list")
    # numpy scalars, lists and plain ints are fine
    assert metric({"a": (np.int64(1), np.float32(0.9)), "b": [2, 1]}, solution) == 1.0


@pytest.mark.parametrize("metric", [global_average_precision, top1_accuracy])
def test_gap_and_top1_check_the_solution(metric):
    preds = {"a": (1, 0.5)}
    cases = [
        ({"a": "12"}, "solution['a'] must be a list of landmark ids (ints), not a string ('12')"),
        ({"a": 12}, "solution['a'] must be a list of landmark ids (ints), not int"),
        ({"a": [1.5]}, "solution['a'] must hold integer landmark ids, found float 1.5"),
        ({"a": ["1"]}, "solution['a'] must hold integer landmark ids, found str '1'"),
    ]
    for solution, message in cases:
        with pytest.raises(TypeError) as info:
            metric(preds, solution)
        assert str(info.value) == message
    with pytest.raises(TypeError, match=r"^solution must be a mapping \(dict\) of test id -> landmark ids, not set$"):
        metric(preds, {1, 2})
    assert metric(preds, {"a": np.array([1, 3])}) == 1.0


def test_relevant_train_images_and_score_predictions_check_inputs():
    with pytest.raises(TypeError) as info:
        relevant_train_images({"q": "1"}, {"t": 1})
    assert str(info.value) == "solution['q'] must be a list of landmark ids (ints), not a string ('1')"
    with pytest.raises(TypeError) as info:
        relevant_train_images({"q": [1]}, {"t": "1"})
    assert str(info.value) == "labels['t'] must be an integer landmark id, not str '1'"
    assert relevant_train_images({"q": [1], "n": []}, {"t1": np.int64(1), "t2": 2}) == {"q": ["t1"]}
    sol = Solution({"a": [1], "b": []}, {"a": "Public", "b": "Private"})
    with pytest.raises(ValueError, match=r"predictions\['a'\]: score must be finite"):
        score_predictions({"a": (1, float("inf"))}, sol)
    out = score_predictions({"a": (1, 0.5), "b": (3, 0.4)}, sol)
    assert out == {"gap": 1.0, "top1": 1.0, "num_test": 2, "num_landmark_test": 1,
                   "gap_private": 0.0, "gap_public": 1.0}

"""Your own photos: `match`, `index` and `search` end to end on real photographs, through the CLI
(exact JSON schemas), with duplicate names in subfolders, every image format, incremental updates."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from landmark_retrieval.io.collection import photo_id, photo_path, scan_folder

FAST = ("--set", "extract.sift.max_keypoints=600", "--set", "extract.vlad.num_words=16")


def _cli(*args, check=True):
    out = subprocess.run([sys.executable, "-m", "landmark_retrieval", *map(str, args)], capture_output=True, text=True)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def _small(src: Path, dst: Path, side: int = 480, **save) -> Path:
    """A copy of a photograph at most ``side`` px (keeps the tests fast), in the format of ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im = im.convert("RGB")
        im.thumbnail((side, side))
        im.save(dst, **save)
    return dst


@pytest.fixture(scope="module")
def oxford(shared_data_dir_module):
    return shared_data_dir_module / "oxford_affine"


@pytest.fixture(scope="module")
def shared_data_dir_module():
    from conftest import shared_data_dir

    path = shared_data_dir()
    if not (path / "oxford_affine").is_dir():
        pytest.skip(f"real photographs not available at {path}")
    return path


def test_ids_are_relative_paths_that_round_trip():
    for rel in ("a.jpg", "trips/rome/IMG 001.JPG", "x/y,z;%20.png", "été/ü.webp", "a/b/../c.png"):
        image_id = photo_id(rel)
        assert "/" not in image_id and " " not in image_id and "," not in image_id
        assert photo_path(image_id) == rel


def test_match_a_real_pair_and_an_unrelated_one(oxford, tmp_path):
    a = _small(oxford / "boat" / "img1.png", tmp_path / "a.png")
    b = _small(oxford / "boat" / "img2.png", tmp_path / "b.jpg")
    c = _small(oxford / "bikes" / "img1.png", tmp_path / "c.webp")
    same = json.loads(_cli("match", a, b, "--json", "--out", tmp_path / "m.png", "-q").stdout)
    assert set(same) == {"inliers", "matches", "homography", "fundamental", "image0", "image1", "picture", "keypoints"}
    assert same["inliers"] >= 30 and same["image0"] == str(a) and same["image1"] == str(b)
    assert np.asarray(same["homography"]).shape == (3, 3) and same["fundamental"] is None
    assert Path(same["picture"]).is_file() and same["picture"] == str(tmp_path / "m.png")
    other = json.loads(_cli("match", a, c, "--json", "--out", "none").stdout)
    assert other["inliers"] < 15 and other["picture"] is None
    assert other["inliers"] < same["inliers"] / 4


def test_match_says_which_file_it_cannot_read(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"not an image")
    out = _cli("match", tmp_path / "a.jpg", tmp_path / "a.jpg", check=False)
    assert out.returncode == 2 and "a.jpg" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_index_every_format_with_repeated_names_then_search_and_update(oxford, tmp_path):
    folder, work = tmp_path / "photos", tmp_path / "w"
    data = oxford.parent
    sources = {"boat": oxford / "boat" / "img1.png", "bikes": oxford / "bikes" / "img1.png",
               "leuven": oxford / "leuven" / "img1.png", "graf": oxford / "graf" / "img1.png",
               "wall": data / "bundler_examples" / "ET" / "et000.jpg",
               "trees": sorted((data / "hloc_sacre_coeur" / "mapping").glob("*.jpg"))[0]}
    scenes = {"boat": "png", "bikes": "jpg", "leuven": "webp", "graf": "tif", "wall": "bmp", "trees": "ppm"}
    for scene, ext in scenes.items():  # the same file name in every subfolder
        _small(sources[scene], folder / scene / f"img.{ext}")
    grey = sorted((data / "superglue_phototourism" / "images").glob("*.jpg"))[0]
    _small(grey, folder / "grey" / "img.pgm")
    Image.open(folder / "grey" / "img.pgm").convert("L").save(folder / "grey" / "img.pgm")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    (folder / "notes.txt").write_text("not an image")
    summary = json.loads(_cli("index", folder, "--work", work, "--json", *FAST).stdout)
    assert summary["images"] == 7 and summary["added"] == 7 and summary["removed"] == 0
    assert [f["path"] for f in summary["failed"]] == ["broken.jpg"]
    listed = sorted(photo_path(i) for i in scan_folder(folder))
    assert listed == sorted([f"{s}/img.{e}" for s, e in scenes.items()] + ["grey/img.pgm", "broken.jpg"])

    query = _small(oxford / "boat" / "img3.png", tmp_path / "q" / "boat 3.jpg")
    result = json.loads(_cli("search", work, query, _small(oxford / "graf" / "img2.png", tmp_path / "q" / "g.png"),
                             "--top", "3", "--json").stdout)
    assert set(result) == {"queries"} and len(result["queries"]) == 2
    first, second = result["queries"]
    assert set(first) == {"query", "results", "picture"} and first["query"] == str(query)
    assert [set(r) for r in first["results"]] == [{"path", "score", "inliers"}] * 3
    assert first["results"][0]["path"] == "boat/img.png" and first["results"][0]["inliers"] >= 30
    assert second["results"][0]["path"] == "graf/img.tif"
    scores = [r["score"] for r in first["results"]]
    assert scores == sorted(scores, reverse=True) and Path(first["picture"]).is_file()

    # incremental: one file added, one removed; only the new one is extracted
    (folder / "wall" / "img.bmp").unlink()
    _small(oxford / "boat" / "img2.png", folder / "more" / "boat2.jpg")
    again = json.loads(_cli("index", folder, "--work", work, "--json").stdout)
    assert (again["images"], again["added"], again["removed"]) == (7, 1, 1)
    unchanged = json.loads(_cli("index", folder, "--work", work, "--json").stdout)
    assert (unchanged["images"], unchanged["added"], unchanged["removed"]) == (7, 0, 0)
    result = json.loads(_cli("search", work, query, "--top", "10", "--json", "--pictures", "none").stdout)
    paths = [r["path"] for r in result["queries"][0]["results"]]
    assert "wall/img.bmp" not in paths and set(paths[:2]) == {"boat/img.png", "more/boat2.jpg"}
    assert result["queries"][0]["picture"] is None


def test_index_refuses_a_work_directory_of_another_folder(tmp_path, oxford):
    one, two = tmp_path / "one", tmp_path / "two"
    _small(oxford / "boat" / "img1.png", one / "a.jpg", side=200)
    _small(oxford / "boat" / "img1.png", two / "a.jpg", side=200)
    _cli("index", one, "--work", tmp_path / "w", *FAST, "--set", "extract.vlad.num_words=4")
    out = _cli("index", two, "--work", tmp_path / "w", check=False)
    assert out.returncode == 2 and f"indexes {one}" in out.stderr
    out = _cli("search", tmp_path / "nothing", one / "a.jpg", check=False)
    assert out.returncode == 2 and "landmark-retrieval index FOLDER" in out.stderr
    shutil.rmtree(tmp_path / "w")


def test_searches_run_side_by_side_and_only_read_the_index(oxford, tmp_path):
    """``search`` holds the index's lock shared: searches run together (with the results each gets
    alone), ``index`` is refused while one runs, the index's files are left as they were, and a
    file added to the folder is searched only once ``index`` has run again."""
    folder, work = tmp_path / "photos", tmp_path / "w"
    for scene in ("boat", "graf", "bikes", "leuven"):
        _small(oxford / scene / "img1.png", folder / f"{scene}.jpg", side=320)
    _cli("index", folder, "--work", work, *FAST)
    boat, graf = (_small(oxford / s / "img2.png", tmp_path / "q" / f"{s}2.jpg", side=320) for s in ("boat", "graf"))
    alone = [json.loads(_cli("search", work, q, "--top", "2", "--json", "--pictures", "none").stdout)
             for q in (boat, graf)]
    assert [a["queries"][0]["results"][0]["path"] for a in alone] == ["boat.jpg", "graf.jpg"]
    stored = {p: p.stat().st_mtime_ns for p in (work / "features" / "index").rglob("*")}

    hold = "import sys, time\nfrom landmark_retrieval.io.lock import work_lock\n" \
           "with work_lock(sys.argv[1], shared=True):\n    print('held', flush=True)\n    time.sleep(60)\n"
    reader = subprocess.Popen([sys.executable, "-c", hold, str(work)], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "held"  # a search in progress
        refused = _cli("index", folder, "--work", work, check=False)
        assert refused.returncode != 0 and "in use by another run" in refused.stderr and "--wait" in refused.stderr
        procs = [subprocess.Popen([sys.executable, "-m", "landmark_retrieval", "search", str(work), str(q), "--top",
                                   "2", "--json", "--pictures", "none"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for q in (boat, graf)]
        together = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
        assert [p.returncode for p in procs] == [0, 0]
    finally:
        reader.kill()
        reader.wait()
    assert together == alone
    assert {p: p.stat().st_mtime_ns for p in (work / "features" / "index").rglob("*")} == stored
    assert [p.name for p in (work / "searches").iterdir()] == ["database"]  # no scratch left behind

    _small(oxford / "boat" / "img3.png", folder / "boat3.jpg", side=320)  # added after the index
    paths = [r["path"] for r in json.loads(_cli("search", work, boat, "--json").stdout)["queries"][0]["results"]]
    assert "boat3.jpg" not in paths and len(paths) == 4
    _cli("index", folder, "--work", work)
    paths = [r["path"] for r in json.loads(_cli("search", work, boat, "--json").stdout)["queries"][0]["results"]]
    assert set(paths[:2]) == {"boat.jpg", "boat3.jpg"}

    # an index interrupted before every listed image was described: search says so, index again fixes it
    from landmark_retrieval.io.collection import read_listing, write_collection

    write_collection(work, folder, [*read_listing(work), photo_id("late/arrival.jpg")])
    out = _cli("search", work, boat, check=False)
    assert out.returncode == 2 and "is incomplete (1 images" in out.stderr and "late/arrival.jpg" in out.stderr
    assert f"landmark-retrieval index {folder} --work {work}` again" in out.stderr

    # queries are described as the index was: a search with other extraction settings is refused
    out = _cli("search", work, boat, "--set", "extract.sift.max_keypoints=100", check=False)
    assert out.returncode == 2 and "was extracted with other settings" in out.stderr and "max_keypoints" in out.stderr

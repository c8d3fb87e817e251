"""Regenerate the own-photos picture of README.md (``docs/own_photos_search.jpg``).

Indexes the ``index`` photographs of ``../shared/data/groups.csv`` (real photos of ~25 places and
objects, plus distractors) with the own-photo commands' default preset (``classical-best``), exactly
as a user would::

    landmark-retrieval index FOLDER --work WORK
    landmark-retrieval search WORK QUERY --top 5

searches it with one of the ``query`` photographs, and saves the contact sheet ``search`` draws.
Skipped (exit 0) when the photographs are absent::

    python benchmarks/readme_pictures.py [--photos ../shared/data] [--query GROUP]
"""
from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path

from suite import DOCS, REPO

from landmark_retrieval.io.progress import set_progress
from landmark_retrieval.photos import index_folder, search_collection

OUT = DOCS / "own_photos_search.jpg"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--query", default="sacre_coeur", help="the group whose first query photo is searched")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    table = args.photos / "groups.csv"
    if not table.is_file():
        print(f"no photographs at {args.photos}: skipped", file=sys.stderr)
        return 0
    set_progress(False)
    with open(table, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    query = next(args.photos / r["path"] for r in rows if r["group"] == args.query and r["suggested_role"] == "query")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        for r in rows:
            if r["suggested_role"] != "query":  # the collection: every photo but the queries
                target = folder / r["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(args.photos / r["path"], target)
        summary = index_folder(folder, Path(tmp) / "work")
        result = search_collection(Path(tmp) / "work", [query], top=5, pictures=Path(tmp) / "pictures")
        found = result["queries"][0]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(found["picture"], args.out)
    print(f"{summary.images} photos indexed; {query.name}: " +
          ", ".join(f"{r['path']} ({r['inliers']} inliers)" for r in found["results"]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``landmark-retrieval <command>`` (also ``python -m landmark_retrieval``).

Commands: ``run`` (every step), ``extract``, ``retrieve``, ``verify``, ``predict``, ``submit``,
``evaluate``, ``demo``, ``presets``, ``show`` (pictures of a run), ``wheelhouse`` (offline
install on Kaggle), ``make-test-model`` (a small DELG SavedModel). Settings come from ``--preset`` plus ``--set
section.option=value`` overrides (see ``landmark-retrieval presets``).
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import List, Optional

from . import __version__
from .config import PRESETS, get_config
from .store import StoreWriteError

logger = logging.getLogger("landmark_retrieval")


def _add_common(p: argparse.ArgumentParser, data: bool = True) -> None:
    if data:
        p.add_argument("--data", required=True, type=Path, help="GLR-layout dataset root (train.csv, train/, test/)")
    p.add_argument("--work", type=Path, default=Path("work"), help="directory for features and intermediate results")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS), help="named configuration")
    p.add_argument("--backend", choices=("sift", "delg"), help="feature backend (overrides the preset)")
    p.add_argument("--model", type=Path, help="DELG SavedModel directory (backend delg)")
    p.add_argument("--workers", type=int, help="verification processes (default: one per CPU core)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.OPTION=VALUE",
                   help="override one setting, e.g. --set verify.num_to_rerank=20 (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="recompute artifacts made with other settings")


def _config(args: argparse.Namespace):
    overrides: List[str] = list(args.overrides)
    if getattr(args, "backend", None):
        overrides.append(f"extract.backend={args.backend}")
    if getattr(args, "model", None):
        overrides.append(f"extract.model_path={args.model}")
        if not getattr(args, "backend", None) and get_config(args.preset).extract.backend != "delg":
            overrides.append("extract.backend=delg")
    if getattr(args, "workers", None):
        overrides.append(f"verify.num_workers={args.workers}")
    return get_config(args.preset, overrides)


def _print_metrics(metrics, as_json: bool) -> None:
    from .evaluate import format_metrics

    print(json.dumps(metrics, indent=2) if as_json else format_metrics(metrics))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="landmark-retrieval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="extract, retrieve, verify, predict, submit (and evaluate with solution.csv)")
    _add_common(p)
    p.add_argument("--out", type=Path, default=Path("submission/submission.csv"), help="submission path")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")

    for name, text in (("extract", "step 1: local and global features"),
                       ("retrieve", "step 2: k nearest train images per test image"),
                       ("verify", "step 3: DEGENSAC inliers of the candidates"),
                       ("predict", "step 4: one landmark and confidence per test image")):
        _add_common(sub.add_parser(name, help=text), data=name != "verify")
    sub.choices["extract"].add_argument(
        "--candidates", action="store_true",
        help="after retrieve: local features of the re-ranking candidates (extract.train_local=candidates)")

    p = sub.add_parser("submit", help="step 5: write submission.csv from predictions")
    _add_common(p)
    p.add_argument("--out", type=Path, default=Path("submission/submission.csv"))
    p.add_argument("--global-only", action="store_true", help="use the predictions without verification")

    p = sub.add_parser("evaluate", help="step 6: GAP (and mAP@100 from a work directory)")
    p.add_argument("--submission", type=Path, help="submission.csv to score")
    p.add_argument("--solution", type=Path, help="Kaggle solution.csv (id,landmarks,Usage)")
    p.add_argument("--data", type=Path, help="with --work: score a pipeline run (global-only and verified)")
    p.add_argument("--work", type=Path, help="work directory of a run")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--json", action="store_true", help="print metrics as JSON")

    p = sub.add_parser("demo", help="build the embedded demo dataset and run the classical pipeline on it")
    p.add_argument("--data", type=Path, default=Path("data/demo"))
    p.add_argument("--work", type=Path, default=Path("work/demo"))
    p.add_argument("--out", type=Path, default=Path("submission/submission.csv"))
    p.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--json", action="store_true")

    sub.add_parser("presets", help="list presets and their settings")

    p = sub.add_parser("show", help="pictures of a run: a test image's neighbours and its verified matches")
    p.add_argument("--data", required=True, type=Path, help="the run's dataset root")
    p.add_argument("--work", required=True, type=Path, help="the run's work directory")
    p.add_argument("--query", help="test image id (default: the one with the best verified neighbour)")
    p.add_argument("--db", help="train image id to match with (default: the best neighbour after re-ranking)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="configuration (default: the one the run saved in WORK/config.json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.OPTION=VALUE")
    p.add_argument("--out", type=Path, help="neighbours PNG; the matches go to <stem>_matches.png beside it "
                                           "(default: WORK/show/<query>.png)")
    p.add_argument("--neighbours", type=int, default=5, help="neighbours to draw")
    p.add_argument("--keypoints", action="store_true", help="also save <stem>_keypoints.png (keypoints by score)")
    p.add_argument("--dpi", type=int, default=100, help="resolution of the PNGs")
    p.add_argument("--colors", type=int, help="save PNGs with a palette of this many colours (<= 256; smaller files)")

    p = sub.add_parser("wheelhouse", help="folder of wheels for an offline install on Kaggle (see docs/kaggle.md)")
    p.add_argument("directory", type=Path, help="output folder (upload it as a Kaggle dataset)")
    p.add_argument("--python-version", help="Kaggle's Python, e.g. 3.11 (default: this interpreter's)")
    p.add_argument("--platform", dest="platforms", action="append",
                   help="wheel platform tag (repeatable; default: manylinux2014/_2_17/_2_28 x86_64)")
    p.add_argument("--faiss", action="store_true", help="also add faiss-cpu")
    p.add_argument("--package", dest="extra", action="append", default=[], help="another wheel to add (repeatable)")
    p.add_argument("--project", type=Path, help="landmark-retrieval source tree (default: this package's)")
    p.add_argument("--no-download", action="store_true", help="build the project's wheel only (no network)")
    p.add_argument("--build-isolation", action="store_true",
                   help="build the project's wheel in an isolated env (needs the network)")
    p.add_argument("--index-url", help="package index for the download")
    p.add_argument("--find-links", action="append", default=[], help="local folder of wheels to look in")
    p.add_argument("--dry-run", action="store_true", help="print the pip commands only")

    p = sub.add_parser("make-test-model", help="export a small random-weight DELG SavedModel (offline)")
    p.add_argument("directory", type=Path, help="output folder (must not hold a SavedModel yet)")
    p.add_argument("--style", choices=("tf1", "tf2"), default="tf1",
                   help="tf1: graph used through prune (like Kaggle's model); tf2: serving_default signature")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--global-dim", type=int, default=2048)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: finished work is kept."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quiet:
        logger.setLevel(logging.WARNING)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _dispatch(args)
    except StoreWriteError as exc:
        logger.error("%s", exc)
        return 1
    except (FileNotFoundError, FileExistsError, ValueError, KeyError, RuntimeError) as exc:
        logger.error("%s", exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
        return 2
    except Terminated:
        logger.error("Terminated: finished work is kept; run the same command again to resume")
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        logger.error("Interrupted: finished work is kept; run the same command again to resume")
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "presets":
        for name in PRESETS:
            print(f"# {name}\n{get_config(name).to_json()}\n")
        return 0
    if cmd == "demo":
        from .demo import run_demo

        result = run_demo(args.data, args.work, args.out, preset=args.preset, overrides=args.overrides)
        print(f"submission: {result.submission}")
        if result.figure:
            print(f"verified matches: {result.figure}")
        m = result.metrics or {}
        print(f"GAP global-only: {m.get('global_gap', float('nan')):.4f}   "
              f"GAP verified: {m.get('verified_gap', float('nan')):.4f}")
        print(f"mAP@100 global-only: {m.get('global_map100', float('nan')):.4f}   "
              f"mAP@100 verified: {m.get('verified_map100', float('nan')):.4f}")
        if args.json:
            _print_metrics(m, True)
        return 0
    if cmd == "evaluate":
        from .evaluate import evaluate, evaluate_run

        if args.submission:
            solution = args.solution or (args.data / "solution.csv" if args.data else None)
            if solution is None:
                raise ValueError("evaluate --submission needs --solution (or --data with a solution.csv)")
            _print_metrics(evaluate(args.submission, solution), args.json)
            return 0
        if args.data and args.work:
            _print_metrics(evaluate_run(get_config(args.preset, args.overrides), args.data, args.work), args.json)
            return 0
        raise ValueError("evaluate needs --submission and --solution, or --data and --work")

    if cmd == "show":
        from .visualize import load_run_config, pick_query, save_show_figures

        conf = load_run_config(args.work, args.preset, args.overrides)
        query = args.query or pick_query(args.data, args.work, conf)
        out = args.out or args.work / "show" / f"{query}.png"
        paths = save_show_figures(args.data, args.work, out, query, args.db, conf,
                                  num_neighbours=args.neighbours, keypoints=args.keypoints, dpi=args.dpi,
                                  colors=args.colors)
        for kind, path in paths.items():
            print(f"{kind}: {path}")
        return 0
    if cmd == "wheelhouse":
        from .wheelhouse import DEFAULT_PLATFORMS, build_wheelhouse

        house = build_wheelhouse(args.directory, python_version=args.python_version,
                                 platforms=args.platforms or DEFAULT_PLATFORMS, faiss=args.faiss, extra=args.extra,
                                 project_dir=args.project, download=not args.no_download,
                                 build_isolation=args.build_isolation, index_url=args.index_url,
                                 find_links=args.find_links, dry_run=args.dry_run)
        if args.dry_run:
            for argv in house.commands:
                print(" ".join(argv))
        else:
            print(house)
        return 0
    if cmd == "make-test-model":
        from .testing import export_test_model

        path = export_test_model(args.directory, style=args.style, seed=args.seed, global_dim=args.global_dim)
        print(f"DELG test model ({args.style}, random weights): {path}")
        print(f"use it with: landmark-retrieval run --backend delg --model {path} ...")
        return 0

    conf = _config(args)
    if cmd == "run":
        from .pipeline import run

        result = run(conf, args.data, args.work, args.out, overwrite=args.overwrite)
        print(f"submission: {result.submission}")
        if result.metrics:
            _print_metrics(result.metrics, args.json)
        return 1 if result.score_error else 0
    if cmd == "extract":
        from .extract import extract, extract_candidates

        if args.candidates:
            extract_candidates(conf, args.data, args.work)
        else:
            extract(conf, args.data, args.work, overwrite=args.overwrite)
    elif cmd == "retrieve":
        from .retrieve import retrieve

        retrieve(conf, args.data, args.work, overwrite=args.overwrite)
    elif cmd == "verify":
        from .verify import verify

        verify(conf, args.work, overwrite=args.overwrite)
    elif cmd == "predict":
        from .predict import predict

        predict(conf, args.data, args.work)
    elif cmd == "submit":
        from .submit import submit

        print(f"submission: {submit(args.data, args.work, args.out, verified=not args.global_only)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

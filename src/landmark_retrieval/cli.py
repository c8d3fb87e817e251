"""Command line: ``landmark-retrieval <command>`` (also ``python -m landmark_retrieval``).

Commands: ``run`` (every step), ``extract``, ``retrieve``, ``verify``, ``predict``, ``submit``,
``evaluate``, ``demo``, ``presets``. Settings come from ``--preset`` plus ``--set
section.option=value`` overrides (see ``landmark-retrieval presets``).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

from . import __version__
from .config import PRESETS, get_config

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
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quiet:
        logger.setLevel(logging.WARNING)
    try:
        return _dispatch(args)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        logger.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        logger.error("Interrupted: finished work is kept; run the same command again to resume")
        return 130


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

    conf = _config(args)
    if cmd == "run":
        from .pipeline import run

        result = run(conf, args.data, args.work, args.out, overwrite=args.overwrite)
        print(f"submission: {result.submission}")
        if result.metrics:
            _print_metrics(result.metrics, args.json)
        return 0
    if cmd == "extract":
        from .extract import extract

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

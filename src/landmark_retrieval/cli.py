"""Command line: ``landmark-retrieval <command>`` (also ``python -m landmark_retrieval``).

Results go to stdout (with ``--json``: one JSON document and nothing else), logs and progress
bars to stderr. The step commands continue the run in ``--work`` with the configuration it
saved in ``WORK/config.json`` (see :func:`landmark_retrieval.presets.resolve_run_config`).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .backends.registry import BACKENDS, backend_for_model
from .cli_parser import DEFAULT_OUT, build_parser
from .config import Config
from .dependencies import check_dependencies, require
from .io.atomic import StoreWriteError
from .io.lock import work_lock
from .overrides import flatten, format_value
from .presets import PRESETS, config_summary, get_config, read_run_config, relevant_settings, resolve_run_config

logger = logging.getLogger("landmark_retrieval")


# --------------------------------------------------------------------------------------------
# Options shared by several commands
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Running a command
# --------------------------------------------------------------------------------------------
class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: finished work is kept."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; returns the exit status (errors are logged, not raised)."""
    from .io.progress import set_progress

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quiet and args.verbose:
        parser.error("-q/--quiet and -v/--verbose cannot be used together")
    level = logger.level
    bars = set_progress(False) if args.quiet else None
    if args.quiet or args.verbose:
        logger.setLevel(logging.WARNING if args.quiet else logging.DEBUG)
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
    except BrokenPipeError:  # stdout closed early (`... | head`): stop quietly, like other tools
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except (OSError, ValueError):
            pass
        return 128 + 13  # SIGPIPE
    except Terminated:
        logger.error("Terminated: finished work is kept; run the same command again to resume")
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        logger.error("Interrupted: finished work is kept; run the same command again to resume")
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        logger.setLevel(level)
        if args.quiet:
            set_progress(bars)


def _step_config(args: argparse.Namespace, save: bool = True, warn: bool = True) -> Config:
    """The run's configuration for a step: saved WORK/config.json, --preset, --set, --backend,
    --model, --workers (see :func:`landmark_retrieval.presets.resolve_run_config`)."""
    overrides: List[str] = list(getattr(args, "overrides", []))
    backend, model = getattr(args, "backend", None), getattr(args, "model", None)
    if backend:
        overrides.append(f"extract.backend={backend}")
    if model:
        overrides.append(f"extract.model_path={model}")
        if not backend:
            preset = getattr(args, "preset", None)
            current = get_config(preset or read_run_config(args.work) or "default", overrides).extract.backend
            if not BACKENDS[current].needs_model:
                overrides.append(f"extract.backend={backend_for_model(model)}")
    if getattr(args, "time_budget", None) is not None:
        overrides.append(f"run.time_budget={args.time_budget}")
    if getattr(args, "cluster", None) is not None:
        overrides.append(f"run.cluster={args.cluster}")
    if getattr(args, "workers", None) is not None:
        overrides.append(f"verify.num_workers={args.workers}")
    return resolve_run_config(args.work, getattr(args, "preset", None), overrides, save=save, warn=warn)


def _photos(args: argparse.Namespace, cmd: str) -> int:
    """``match``, ``index`` and ``search`` (:mod:`landmark_retrieval.photos`)."""
    from . import photos

    if cmd == "match":
        a, b = args.images
        conf = get_config(args.preset, args.overrides)
        picture = args.out if args.out is not None else Path(f"match-{a.stem}-{b.stem}.png")
        result = photos.match_images(a, b, conf, None if str(picture).lower() == "none" else picture)
        if args.json:
            _print_json(result)
        else:
            print(f"{result['inliers']} inliers of {result['matches']} matches "
                  f"({result['keypoints'][0]} and {result['keypoints'][1]} keypoints)")
            if result["picture"]:
                print(f"picture: {result['picture']}")
        return 0
    if cmd == "index":
        summary = photos.index_folder(args.folder, args.work, args.preset, args.overrides, wait=args.wait)
        if args.json:
            _print_json(summary.to_dict())
        else:
            print(f"{summary.images} images indexed in {summary.work} ({summary.added} new, {summary.removed} removed, "
                  f"{len(summary.failed)} unreadable)")
            for f in summary.failed:
                print(f"  unreadable: {f['path']}: {f['error']}")
            print(f"search it: landmark-retrieval search {summary.work} QUERY_IMAGE")
        return 0
    pictures = args.pictures if args.pictures is not None else args.work / "search"
    result = photos.search_collection(args.work, args.queries, args.top,
                                      None if str(pictures).lower() == "none" else pictures, args.overrides,
                                      wait=args.wait)
    if args.json:
        _print_json(result)
        return 0
    for q in result["queries"]:
        print(f"{q['query']}:" + (f" {q['error']}" if "error" in q else ""))
        for i, r in enumerate(q["results"], 1):
            inliers = "" if r["inliers"] is None else f", {r['inliers']} inliers"
            print(f"  {i:>3}. {r['path']}  (score {r['score']:.3f}{inliers})")
        if q["picture"]:
            print(f"  picture: {q['picture']}")
    return 0


def demo_paths(args: argparse.Namespace) -> Tuple[Path, Path, Path]:
    """``(data, work, out)`` of ``demo``: the retrieval demo's defaults are its own (data/,
    work/ and submission/ ``demo-retrieval``), so the two demos never overwrite each other."""
    retrieval = args.task == "retrieval"
    data = args.data or Path("data/demo-retrieval" if retrieval else "data/demo")
    work = Path("work/demo-retrieval") if retrieval and args.work == Path("work/demo") else args.work
    out = Path("submission/demo-retrieval.csv") if retrieval and args.out == DEFAULT_OUT else args.out
    return data, work, out


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _print_metrics(metrics: Dict[str, Any], as_json: bool) -> None:
    from .evaluate import format_metrics

    if as_json:
        _print_json(metrics)
    else:
        print(format_metrics(metrics))


def _presets(args: argparse.Namespace) -> int:
    if args.name is None:
        if args.json:
            _print_json({name: preset.description for name, preset in PRESETS.items()})
        else:
            width = max(map(len, PRESETS))
            for name, preset in PRESETS.items():
                print(f"{name:<{width}}  {preset.description}")
            print("\nSettings of one preset: landmark-retrieval presets NAME")
        return 0
    conf = get_config(args.name)
    settings = relevant_settings(conf)
    if args.json:
        _print_json(settings)
        return 0
    print(f"# {args.name}: {PRESETS[args.name].description}")
    for key, value in flatten(settings).items():
        if key != "name":
            print(f"{key} = {format_value(value)}")
    return 0


def _demo_scores(metrics: Dict[str, Any]) -> List[str]:
    def get(key: str) -> float:
        return float(metrics.get(key, float("nan")))

    lines = []
    if "global_gap" in metrics:
        lines.append(f"GAP global-only: {get('global_gap'):.4f}   GAP verified: {get('verified_gap'):.4f}")
    lines.append(f"mAP@100 global-only: {get('global_map100'):.4f}   mAP@100 verified: {get('verified_map100'):.4f}"
                 + (f"   label-aware: {get('label_map100'):.4f}" if "label_map100" in metrics else ""))
    return lines


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "presets":
        return _presets(args)
    if cmd == "demo":
        from .demo import run_demo

        data, work, out = demo_paths(args)
        result = run_demo(data, work, out, preset=args.preset, overrides=args.overrides, task=args.task)
        if args.json:
            _print_json({"submission": str(result.submission), "figure": str(result.figure) if result.figure else None,
                         "work": str(result.work), "metrics": result.metrics})
            return 0
        print(f"submission: {result.submission}")
        if result.figure:
            print(f"verified matches: {result.figure}")
        print("\n".join(_demo_scores(result.metrics or {})))
        return 0
    if cmd in ("match", "index", "search"):
        return _photos(args, cmd)
    if cmd == "evaluate":
        from .evaluate import evaluate_run, score_submission

        if args.submission:
            if args.work or args.preset or args.overrides:
                logger.warning("evaluate --submission ignores --work, --preset and --set")
            solution = args.solution or (args.data / "solution.csv" if args.data else None)
            if solution is None:
                raise ValueError("evaluate --submission needs --solution (or --data with a solution.csv)")
            _print_metrics(score_submission(args.submission, solution), args.json)
            return 0
        if args.data and args.work:
            _print_metrics(evaluate_run(_step_config(args, save=False), args.data, args.work), args.json)
            return 0
        raise ValueError("evaluate needs --submission and --solution, or --data and --work")
    if cmd == "show":
        from .visualize import pick_query, save_show_figures

        conf = _step_config(args, save=False)
        query = args.query or pick_query(args.data, args.work, conf)
        out = args.out or args.work / "show" / f"{query}.png"
        paths = save_show_figures(args.data, args.work, out, query, args.db, conf,
                                  num_neighbours=args.neighbours, keypoints=args.keypoints, dpi=args.dpi,
                                  colors=args.colors)
        if args.json:
            _print_json({kind: str(path) for kind, path in paths.items()})
        else:
            for kind, path in paths.items():
                print(f"{kind}: {path}")
        return 0
    if cmd == "wheelhouse":
        from .wheelhouse import DEFAULT_PLATFORMS, build_wheelhouse

        house = build_wheelhouse(args.directory, python_version=args.python_version,
                                 platforms=args.platforms or DEFAULT_PLATFORMS, faiss=args.faiss,
                                 learned=args.learned, extra=args.extra,
                                 project_dir=args.project, download=not args.no_download,
                                 build_isolation=args.build_isolation, index_url=args.index_url,
                                 find_links=args.find_links, dry_run=args.dry_run)
        if args.dry_run:
            for argv in house.commands:
                print(" ".join(argv))
        else:
            print(house)
        return 0
    if cmd == "split":
        from .split import make_validation_split

        split = make_validation_split(args.data, args.out, fraction=args.fraction,
                                      distractor_landmarks=args.distractor_landmarks, seed=args.seed, copy=args.copy,
                                      distractors_per_landmark=args.distractors_per_landmark)
        counts = split.summary()
        if args.json:
            _print_json({"data": str(args.out), **counts})
        else:
            print(f"validation dataset: {args.out}")
            for key, value in counts.items():
                print(f"{key:>20}: {value}")
        return 0
    if cmd == "merge":
        from .io.shards import merge

        with work_lock(args.work, wait=args.wait):
            merged = merge(args.work, args.sources, link=args.link)
        if args.json:
            _print_json({"work": str(merged.work), "added_shards": merged.added, "added_images": merged.images,
                         "already_merged": merged.already, "damaged": merged.damaged,
                         "missing_parts": merged.missing_parts})
        else:
            print(merged)
        return 0
    if cmd == "make-test-model":
        require("tensorflow", "make-test-model")
        from .testing import export_test_model

        path = export_test_model(args.directory, style=args.style, seed=args.seed, global_dim=args.global_dim,
                                 backbone=args.backbone)
        print(f"DELG test model ({args.style}, {args.backbone}, random weights): {path}")
        print(f"use it with: landmark-retrieval run --backend delg --model {path} ...")
        return 0

    if cmd in ("retrieve", "verify", "predict", "submit") and not (args.work / "features").is_dir():
        _step_config(args, save=False)  # bad options are reported first
        raise FileNotFoundError(f"{args.work} holds no features: run `extract` (or `run`) with this --work first")
    # a missing optional package: one line, before any work (and before the work directory exists)
    check_dependencies(_step_config(args, save=False, warn=False))
    with work_lock(args.work, wait=args.wait):  # one writing run per work directory
        return _step_command(args, cmd)


def _step_command(args: argparse.Namespace, cmd: str) -> int:
    """``run`` and the step commands (the caller holds the work directory's lock). ``run`` and
    ``extract`` save the settings only once the stored features fit them: a refused run leaves
    WORK/config.json as it was."""
    conf = _step_config(args, save=cmd not in ("run", "extract"), warn=False)
    if getattr(args, "task", None) and getattr(args, "data", None):
        from .io.dataset import load_dataset

        args.data = load_dataset(args.data, args.task)
    if cmd == "run":
        from .pipeline import run

        result = run(conf, args.data, args.work, args.out, overwrite=args.overwrite)
        if args.json:
            _print_json({"submission": str(result.submission), "work": str(result.work),
                         "metrics": result.metrics, "score_error": result.score_error,
                         "timings": {step: round(seconds, 3) for step, seconds in result.timings.items()},
                         "time_budget": result.time_budget, "skipped": result.skipped})
        else:
            print(f"submission: {result.submission}")
            for note in result.skipped:
                print(f"skipped: {note}")
            if result.metrics:
                _print_metrics(result.metrics, False)
        return 1 if result.score_error else 0
    logger.info("Settings: %s", config_summary(conf))
    if cmd == "extract":
        from .extract import check_features, extract, extract_candidates
        from .presets import save_run_config

        if args.candidates:
            save_run_config(args.work, conf)
            extract_candidates(conf, args.data, args.work)
        else:
            backend = check_features(conf, args.data, args.work, overwrite=args.overwrite)
            save_run_config(args.work, conf)
            extract(conf, args.data, args.work, overwrite=args.overwrite, shard=args.shard, backend=backend)
    elif cmd == "retrieve":
        from .retrieve import retrieve

        retrieve(conf, args.data, args.work, overwrite=args.overwrite)
    elif cmd == "verify":
        from .verify import verify

        verify(conf, getattr(args, "data", None), args.work, overwrite=args.overwrite)
    elif cmd == "predict":
        from .predict import predict

        predict(conf, args.data, args.work)
    elif cmd == "submit":
        from .submit import submit

        verified = conf.verify.enabled and not args.global_only
        print(f"submission: {submit(conf, args.data, args.work, out=args.out, verified=verified)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

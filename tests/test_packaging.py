"""The built wheel installs into a clean venv and works from outside the repository."""

import re
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def clean_source(dest: Path) -> Path:
    """The repository's files as a clean checkout has them (no build/ or egg-info left by earlier builds, which
    setuptools would reuse and so hide a package missing from pyproject)."""
    import shutil

    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard"], check=True, capture_output=True,
                           text=True).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dest / f)
    return dest


def test_wheel_installs_in_a_clean_venv_and_lists_from_outside_the_repo(tmp_path):
    wheels = tmp_path / "dist"
    src = clean_source(tmp_path / "src")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels)],
        check=True, capture_output=True,
    )
    (whl,) = wheels.glob("lfpo_bench-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert "lfpo_bench/tasks/sudoku.py" in names and any(n.startswith("lfpo_bench/baselines/") for n in names)
    assert not any(n.startswith(("tasks/", "baselines/", "tests/")) for n in names), "generic top-level names leaked"
    # the engines and every launch config the README names ship in the wheel
    assert {"lfpo_bench/distributed/fsdp.py", "lfpo_bench/distributed/zero.py"} <= set(names)
    assert {f"lfpo_bench/accelerate/{c}.yaml" for c in ("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3")} <= set(names)
    # every package of the source tree ships (a new subpackage missing from pyproject's list would not), and the presets
    pkgs = {str(p.parent.relative_to(REPO)) for p in (REPO / "lfpo_bench").rglob("__init__.py")}
    missing = sorted(p for p in pkgs if f"{p}/__init__.py" not in names)
    assert not missing, f"packages missing from the wheel: {missing}"
    assert {f"lfpo_bench/presets/{p.name}" for p in (REPO / "lfpo_bench" / "presets").glob("*.yaml")} <= set(names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(whl)], check=True)
    # dependencies (torch, transformers, ...) come from this environment's site-packages, added as a plain
    # path: its .pth files (our editable install) are not processed, so lfpo_bench comes from the wheel only
    deps = [p for p in [sysconfig.get_paths()["purelib"], *site.getsitepackages()] if Path(p).is_dir()]
    target = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            check=True, capture_output=True, text=True).stdout.strip()
    Path(target, "zz_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run([str(py), "-c", "import lfpo_bench.tasks.sudoku as m; print(m.__file__)"],
                           cwd=outside, check=True, capture_output=True, text=True).stdout
    assert str(venv) in where
    out = subprocess.run([str(venv / "bin" / "lfpo-bench"), "list"], cwd=outside, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "sudoku4" in out.stdout and "lfpo" in out.stdout


def _quickstart_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("quickstart", REPO / ".ci" / "quickstart.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_quickstart_has_exactly_two_commands_and_ci_runs_them():
    """The Quickstart is the contract: install + main job, then the tests; .ci/run reads it from the README."""
    cmds = _quickstart_module().quickstart((REPO / "README.md").read_text())
    assert len(cmds) == 2
    install, test = cmds
    assert install.startswith("pip install torch==2.13.0") and "lfpo-bench run" in install
    # the default test tier's extras are all in the install command
    extras = set(re.search(r'\.\[([\w,]+)\]', install).group(1).split(","))
    assert {"dev", "eval", "dist", "plot"} <= extras
    assert test.startswith("pytest")
    ci = (REPO / ".ci" / "run").read_text()
    assert "quickstart.py README.md" in ci and '"${QUICKSTART[0]}"' in ci and '"${QUICKSTART[1]}"' in ci
    assert "pip install -q -e" not in ci.split("QUICKSTART[1]")[0], "CI must not install more than the README before its tests"


def test_quickstart_parser_rejects_a_third_command(tmp_path):
    import subprocess

    bad = "# x\n\n## Quickstart\n\n```bash\npip install torch==2.13.0 && lfpo-bench run\npytest -q\nmake docs\n```\n"
    f = tmp_path / "README.md"
    f.write_text(bad)
    r = subprocess.run([sys.executable, str(REPO / ".ci" / "quickstart.py"), str(f)], capture_output=True, text=True)
    assert r.returncode != 0 and "exactly two" in r.stderr

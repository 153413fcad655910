"""The built wheel installs into a clean venv and works from outside the repository."""

import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_installs_in_a_clean_venv_and_lists_from_outside_the_repo(tmp_path):
    wheels = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels)],
        check=True, capture_output=True,
    )
    (whl,) = wheels.glob("lfpo_bench-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert "lfpo_bench/tasks/sudoku.py" in names and any(n.startswith("lfpo_bench/baselines/") for n in names)
    assert not any(n.startswith(("tasks/", "baselines/", "tests/")) for n in names), "generic top-level names leaked"
    # the engines and every launch config the README names ship in the wheel
    assert {"lfpo_bench/distributed/fsdp.py", "lfpo_bench/distributed/zero.py"} <= set(names)
    assert {f"lfpo_bench/accelerate/{c}.yaml" for c in ("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3")} <= set(names)

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

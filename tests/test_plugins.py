"""Third-party methods and tasks: entry points (tolerantly loaded, shown by `list`) and file specs."""

import os
import subprocess
import sys
import textwrap

import pytest

from lfpo_bench.registry import load_object
from lfpo_bench.types import UserError

PLUGIN = textwrap.dedent('''
    from dataclasses import dataclass
    from lfpo_bench.method import Method

    @dataclass(frozen=True)
    class Cfg:
        mu: int = 1  # iterations

    class MyRL(Method):
        """My RL method, installed as a package."""
        name = "myrl"
        Config = Cfg

        def loss(self, ctx, mb, state, it, m, chunk=0):
            raise NotImplementedError
''')


def make_dist(root, entries: str):
    (root / "myplug.py").write_text(PLUGIN)
    info = root / "myplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entries)


def test_entry_point_plugins_are_listed_and_broken_ones_reported(tmp_path):
    make_dist(tmp_path, "[lfpo_bench.methods]\nmyrl = myplug:MyRL\nbroken = myplug:DoesNotExist\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-m", "lfpo_bench.cli", "list"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "myrl" in p.stdout and "plugin myplug:MyRL" in p.stdout
    assert "broken" in p.stderr and "failed to load" in p.stderr


def test_file_and_module_specs_load_with_clear_errors(tmp_path):
    f = tmp_path / "mine.py"
    f.write_text(PLUGIN)
    assert load_object(f"{f}:MyRL").name == "myrl"
    with pytest.raises(UserError, match="did you mean MyRL"):
        load_object(f"{f}:MyRl")
    with pytest.raises(UserError, match="not found"):
        load_object(f"{tmp_path / 'nope.py'}:X")
    with pytest.raises(UserError, match="cannot import module"):
        load_object("no_such_pkg.mod:X")

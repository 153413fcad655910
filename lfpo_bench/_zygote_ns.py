"""The zygote's filesystem and namespace set-up: its minimal root (``pivot_root``) and the per-program pid,
IPC and mount namespaces. Stdlib only; joined into the zygote's source by the sandbox (see ``_zygote.py``)."""

import ctypes
import os
import signal
import sys

LIBC = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWIPC, CLONE_NEWNET = 0x00020000, 0x20000000, 0x08000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 0x4000, 0x40000)
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
SCRATCH = "/.scratch"  # per program: one size-limited tmpfs; its work/ is bound on /tmp, shm/ on /dev/shm
WORK = "/tmp"
# /etc entries a Python program may need; the rest of /etc (package-manager credentials, ...) stays hidden
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "passwd", "group", "nsswitch.conf",
       "hosts", "host.conf", "mime.types", "os-release", "alternatives", "protocols", "services", "locale.alias")
DEV = ("null", "zero", "full", "random", "urandom")


def _mount(src, dst, fstype, flags, data=None):
    enc = lambda x: x.encode() if isinstance(x, str) else x  # noqa: E731
    if LIBC.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {src} on {dst}: {os.strerror(e)}")


def _bind(src, dst, extra=MS_NOSUID | MS_NODEV):
    _mount(src, dst, None, MS_BIND)
    _mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | extra)


def _under(path, roots):
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def minimal_root(cfg):
    """Give the zygote (and so every program) a private mount namespace whose root holds only what the
    interpreter needs, read-only and nosuid: /usr (without /usr/local), the interpreter's own prefix when it
    lives elsewhere, the /bin, /lib... links, a few /etc files, /dev/{null,zero,full,random,urandom}. The
    project tree, virtualenvs, data and cache folders, home folders, /run, /var, /opt, /mnt are absent;
    paths in ``cfg["hide"]`` that fall inside an exposed tree are covered with an empty read-only tmpfs.
    Needs CAP_SYS_ADMIN (root, or bubblewrap's namespace); raises OSError otherwise."""
    import sysconfig

    if LIBC.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    _mount("none", "/", None, MS_REC | MS_PRIVATE)
    new = "/tmp" if os.path.isdir("/tmp") else "/mnt"
    _mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    exposed = []
    for top in sorted(os.listdir("/")):
        src = "/" + top
        if top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr"):
            if os.path.islink(src):
                os.symlink(os.readlink(src), new + src)
            elif os.path.isdir(src):
                os.mkdir(new + src)
                _bind(src, new + src)
                exposed.append(src)
    prefix = os.path.realpath(sys.base_prefix)
    if not _under(prefix, exposed):  # an interpreter outside /usr (pyenv, conda): its own install, read-only
        os.makedirs(new + prefix, exist_ok=True)
        _bind(prefix, new + prefix)
        exposed.append(prefix)
    os.mkdir(new + "/etc")
    for name in ETC:
        src = "/etc/" + name
        if os.path.islink(src) and not os.path.exists(src):
            continue
        if os.path.isdir(src):
            os.mkdir(new + src)
        elif os.path.isfile(src):
            open(new + src, "w").close()
        else:
            continue
        _bind(src, new + src)
    os.mkdir(new + "/dev")
    _mount("tmpfs", new + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755")
    for name in DEV:
        open(new + "/dev/" + name, "w").close()
        _mount("/dev/" + name, new + "/dev/" + name, None, MS_BIND)
        _mount(None, new + "/dev/" + name, None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NOEXEC)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, new + "/dev/" + name)
    os.mkdir(new + "/dev/shm")
    _mount(None, new + "/dev", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755")
    for d in ("/proc", "/tmp", SCRATCH):
        os.makedirs(new + d, exist_ok=True)
    os.chmod(new + SCRATCH, 0o700)
    hide = {"/usr/local"}
    hide.update(os.path.realpath(p) for p in cfg.get("hide", []))
    for key in ("purelib", "platlib"):  # the interpreter's own site-packages: not on sys.path under -I -S
        hide.add(os.path.realpath(sysconfig.get_paths()[key]))
    hidden = []
    for p in sorted(hide):
        if not _under(p, exposed) or not os.path.exists(new + p):
            continue
        if os.path.isdir(new + p):
            _mount("tmpfs", new + p, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=0555")
        else:
            _mount("/dev/null", new + p, None, MS_BIND)
        hidden.append(p)
    os.chdir(new)
    if LIBC.syscall(155, b".", b".") != 0:  # pivot_root(".", "."): the old root is stacked under the new one
        raise OSError(ctypes.get_errno(), "pivot_root")
    if LIBC.umount2(b".", MNT_DETACH) != 0:
        raise OSError(ctypes.get_errno(), "umount old root")
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return hidden


def isolate(cfg):
    """Set up the zygote's isolation. Returns (what is isolated, whether per-program namespaces work)."""
    done = []
    if cfg.get("netns"):
        if LIBC.unshare(CLONE_NEWNET) == 0:
            done.append("net")
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        minimal_root(cfg)
        done.append("fs")
    except OSError as e:
        done.append(f"fs failed: {e}")
        return done, False
    # per-program namespaces need CAP_SYS_ADMIN here too: try once
    pid = os.fork()
    if pid == 0:
        os._exit(0 if LIBC.unshare(CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWNS) == 0 else 1)
    _, st = os.waitpid(pid, 0)
    ok = os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0
    if ok:
        done += ["pid", "ipc", "proc", "scratch-size"]
    return done, ok


def become_subreaper():
    LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1)

"""Confinement of a child process that loads untrusted files; stdlib only, Linux.

``confine`` is called first thing in a fresh, single-threaded interpreter. Each step that the
kernel refuses (an old kernel, a container without user namespaces) is skipped, and the
result says which took effect: resource limits always do; the network, the file system and
stray processes where the kernel offers network namespaces, Landlock (Linux 5.13+) and PID
namespaces (as root, or inside a user namespace where unprivileged ones are allowed).

Landlock lets the process open only: Python and its packages (``sys.prefix`` and friends),
system libraries, a few files of ``/etc``, ``/proc`` and ``/sys`` that libraries read, and
``folder`` (read-write). The server's database, keys and settings files stay out of reach,
and so do other processes (no ptrace, and no signals or abstract sockets from ABI 6).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import stat
import sys

__all__ = ["confine"]

_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_CLONE_NEWPID = 0x20000000
_SIGKILL = 9
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # on every arch
_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1

# Landlock file-system rights: EXECUTE, WRITE_FILE, READ_FILE, READ_DIR, then directory
# changes; REFER (ABI 2), TRUNCATE (ABI 3) and IOCTL_DEV (ABI 5) came later.
_EXECUTE, _WRITE, _READ, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FILE_RIGHTS = _EXECUTE | _WRITE | _READ | (1 << 14) | (1 << 15)
_READ_ONLY = _EXECUTE | _READ | _READ_DIR
_NET_TCP = (1 << 0) | (1 << 1)  # BIND_TCP, CONNECT_TCP (ABI 4)
_SCOPES = (1 << 0) | (1 << 1)  # abstract unix sockets, signals (ABI 6)
_SYSTEM = ("/usr", "/lib", "/lib64", "/lib32", "/bin")
_SYSTEM_FILES = (
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/os-release",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/proc/sys/kernel/osrelease",
    "/proc/cpuinfo",
    "/proc/self",  # opened, this is the process's own /proc/<pid>
    "/sys/devices/system/cpu",
    "/sys/devices/system/node",
)


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def _fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1
    for bit, since in ((13, 2), (14, 3), (15, 5)):
        if abi >= since:
            rights |= 1 << bit
    return rights


def _readable_paths() -> list[str]:
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # openmaas/
    extra = os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
    return [*sorted(prefixes), package, *_SYSTEM, *_SYSTEM_FILES, *filter(None, extra)]


def _landlock(libc: ctypes.CDLL, folder: str) -> bool:
    """Allow reading Python, its packages and system files, and writing ``folder`` only."""
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    abi = int(syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), _RULESET_VERSION))
    if abi < 1:
        return False
    everything = _fs_rights(abi)
    attr = _RulesetAttr(everything, _NET_TCP if abi >= 4 else 0, _SCOPES if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = int(syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0))
    if ruleset < 0:
        return False
    try:
        rules = [(path, _READ_ONLY) for path in _readable_paths()]
        rules += [(folder, everything), ("/dev/null", _READ | _WRITE), ("/dev/urandom", _READ)]
        for path, rights in rules:
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                try:
                    if not stat.S_ISDIR(os.fstat(fd).st_mode):
                        rights &= _FILE_RIGHTS  # a file takes no directory rights
                    rule = _PathBeneath(rights & everything, fd)
                    syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0)
                finally:
                    os.close(fd)
        return int(syscall(_SYS_RESTRICT_SELF, ruleset, 0)) == 0
    finally:
        os.close(ruleset)


def _set_limit(which: int, value: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def _pid_namespace(libc: ctypes.CDLL) -> bool:
    """Go on in a child that is init of a new PID namespace; this process only waits.

    When that init ends, killed or not, the kernel kills every process it left, even one
    that left the process group. The waiting process ends as its child did (same exit
    status or signal), so the parent sees no difference. False: no namespace, no fork.
    """
    if int(libc.unshare(_CLONE_NEWPID)) != 0:
        return False
    pid = os.fork()
    if pid == 0:
        libc.prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)  # fork cleared it
        return True
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code if code >= 0 else 1)


def confine(folder: str, *, memory: int, cpu_seconds: int, file_bytes: int) -> dict[str, bool]:
    """Confine this process (call it first, on one thread); say what took effect.

    It dies with its parent, never gains privileges (no setuid), gets ``memory`` bytes of
    address space, ``cpu_seconds`` of CPU, files up to ``file_bytes`` and no core dumps;
    where the kernel allows: a new, empty network namespace, Landlock file-system rules,
    and a new PID namespace that takes every process it starts down with it.
    """
    _set_limit(resource.RLIMIT_CPU, cpu_seconds)
    _set_limit(resource.RLIMIT_FSIZE, file_bytes)
    _set_limit(resource.RLIMIT_CORE, 0)
    if not sys.platform.startswith("linux"):  # a developer's Mac: CPU and file limits only
        return {"limits": False, "network": False, "files": False, "processes": False}
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # Landlock requires it too
    # Still one thread here, as unshare(CLONE_NEWUSER) requires.
    network = int(libc.unshare(_CLONE_NEWNET)) == 0
    if not network:
        network = int(libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET)) == 0
    files = _landlock(libc, os.path.abspath(folder))
    _set_limit(resource.RLIMIT_AS, memory)
    processes = _pid_namespace(libc)
    return {"limits": True, "network": network, "files": files, "processes": processes}

"""PyTorch uploads (TorchScript, ``torch.export`` programs) converted to ONNX at publish time.

Both formats are zip archives holding pickles and code, and loading either can run code that
the file brings (``torch.jit.load`` says so; ``torch.export.load`` falls back to
``torch.load(weights_only=False)`` and hands shape expressions to ``sympy.sympify``). This
process never loads them: ``looks_like_torch`` only reads member names, and
``convert_to_onnx`` hands the bytes to a fresh interpreter (``python -I``, fork+exec, as the
model workers are started) in its own session, with a handful of locale/path variables, no
settings or keys, and a private 0700 folder as working directory, home and TMPDIR. That
child confines itself before it loads anything (``_confine``: memory, CPU and file-size
limits, no network, Landlock file rules, a PID namespace, where the kernel allows each),
and this side kills its whole process group at the wall-clock ``timeout``, then reads what
it left without following links. Whatever goes wrong becomes an ``InvalidArtifactError``
that says what to publish instead.

Converting needs the ``torch`` extra; without it the error says so. It blocks the calling
thread for seconds (torch takes about two to import; ``torch.export`` programs about ten):
call it from a worker thread, and few at a time (each child may use ``memory_limit``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from importlib.util import find_spec

import openmaas
from openmaas.errors import InvalidArtifactError
from openmaas.runtimes._torch_child import ERROR, FAILED, MODEL, ONNX

__all__ = ["convert_to_onnx", "looks_like_torch"]

log = logging.getLogger(__name__)

_ZIP_MAGIC = b"PK\x03\x04"
_MAX_MEMBERS = 10_000
_MAX_INPUTS, _MAX_RANK, _MAX_DIM = 64, 8, 1 << 24
_FILE_BYTES = 4 << 30  # ONNX files stop at 2 GiB (protobuf); the log shares the limit
_LOG, _LOG_TAIL, _MAX_DETAIL = "log", 4000, 2000
_FULLY_CONFINED = 'confined: {"limits": true, "network": true, "files": true, "processes": true}'

# The child imports from the parent's sys.path and skips the package __init__ modules, as
# the model workers do (worker_process._BOOT): empty packages stand in for them.
_BOOT = """\
import os, sys, types
sys.path[:] = sys.argv[1].split(os.pathsep)
for name in ("openmaas", "openmaas.runtimes"):
    package = types.ModuleType(name)
    package.__path__ = [os.path.join(sys.argv[2], *name.split(".")[1:])]
    sys.modules[name] = package
from openmaas.runtimes._torch_child import main
sys.exit(main(sys.argv[3:]))
"""
_ENV_KEPT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "LD_LIBRARY_PATH")
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def looks_like_torch(data: bytes) -> str | None:
    """``"torchscript"``, ``"torch-export"`` or None, from the zip's member names alone.

    ``torch.jit.save`` writes ``<root>/code/...`` beside ``<root>/data.pkl``;
    ``torch.export.save`` writes ``<root>/archive_format`` (``.pt2``) or, before torch 2.6,
    ``serialized_exported_program.json``. A ``torch.save`` checkpoint has neither: it is
    weights without the model's code, and stays refused as a pickle.
    """
    if not data.startswith(_ZIP_MAGIC):
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()[:_MAX_MEMBERS]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        return None
    inner = {name.split("/", 1)[1] for name in names if name.count("/") >= 1}
    if "archive_format" in inner or "serialized_exported_program.json" in inner:
        return "torch-export"
    if "data.pkl" in inner and any(name.startswith("code/") for name in inner):
        return "torchscript"
    return None


def _checked_hints(input_shapes: Mapping[str, Sequence[int]] | None) -> dict[str, list[int]]:
    """``input_shapes`` as JSON-ready lists, or InvalidArtifactError naming the problem."""
    if input_shapes is None:
        return {}
    example = 'e.g. {"x": [1, 1, 8, 8]} (batch first)'
    if not isinstance(input_shapes, Mapping) or len(input_shapes) > _MAX_INPUTS:
        raise InvalidArtifactError(
            f"input_shapes must map input names to shapes, {example}", field="input_shapes"
        )
    hints: dict[str, list[int]] = {}
    for name, shape in input_shapes.items():
        dims = list(shape) if isinstance(shape, Sequence) and not isinstance(shape, str) else []
        valid = all(type(d) is int and 1 <= d <= _MAX_DIM for d in dims)
        if not isinstance(name, str) or not name or not 1 <= len(dims) <= _MAX_RANK or not valid:
            raise InvalidArtifactError(
                f"input_shapes[{name!r}] must be a list of 1 to {_MAX_RANK} positive integers, "
                f"{example}",
                field="input_shapes",
            )
        hints[name] = dims
    return hints


def _child_env(home: str) -> dict[str, str]:
    env = {key: os.environ[key] for key in _ENV_KEPT if key in os.environ}
    env.update(dict.fromkeys(_THREAD_VARS, "1"))
    env.update(HOME=home, TMPDIR=home, XDG_CACHE_HOME=home, TORCH_HOME=home)
    return env


def convert_to_onnx(
    data: bytes,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    timeout: float = 120.0,
    memory_limit: int = 4 << 30,
) -> bytes:
    """Convert a TorchScript or ``torch.export`` archive to ONNX (opset 17) in a child.

    ``input_shapes`` gives TorchScript inputs an example shape (batch first, FP32) where
    the file records none (``torch.jit.script``); dimension 0 is made dynamic. A
    ``torch.export`` program keeps its own shapes and ignores it. ``timeout`` is wall-clock
    seconds, ``memory_limit`` the child's address space in bytes.
    """
    kind = looks_like_torch(data)
    if kind is None:
        raise InvalidArtifactError(
            "the upload is not a TorchScript (torch.jit.save) or torch.export (.pt2) archive; "
            "publish an .onnx file (torch.onnx.export)"
        )
    hints = _checked_hints(input_shapes)
    if find_spec("torch") is None:
        raise InvalidArtifactError(
            "torch is not installed on this server: publish ONNX (torch.onnx.export) or "
            "install openmaas[torch]"
        )
    folder = tempfile.mkdtemp(prefix="openmaas-torch-")  # 0700
    try:
        fd = os.open(os.path.join(folder, MODEL), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        return _run_child(folder, kind, hints, timeout, memory_limit)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # it removes links, never follows them


def _run_child(
    folder: str, kind: str, hints: dict[str, list[int]], timeout: float, memory_limit: int
) -> bytes:
    paths = os.pathsep.join(path for path in sys.path if path)
    package = os.path.dirname(openmaas.__file__)
    cpu_seconds = max(1, math.ceil(timeout)) + 1  # the wall clock normally stops it first
    limits = (str(memory_limit), str(cpu_seconds), str(_FILE_BYTES))
    arguments = (paths, package, kind, json.dumps(hints), *limits)
    # What the child leaves is read through this descriptor, so that renaming the folder
    # away or planting links in it (what a hostile model could try) shows nothing else.
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        with open(os.path.join(folder, _LOG), "wb") as output:
            proc = subprocess.Popen(  # noqa: S603 (our own interpreter and code, no shell)
                [sys.executable, "-I", "-c", _BOOT, *arguments],
                cwd=folder,
                env=_child_env(folder),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        try:
            exited = _wait_unreaped(proc, timeout)
        finally:
            if proc.returncode is None:  # not reaped: its group id is still its own
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # it and all it started
            code = proc.wait()
        return _result(folder_fd, code if exited else None, timeout, memory_limit)
    finally:
        os.close(folder_fd)


def _read(folder_fd: int, name: str, limit: int, tail: bool = False) -> bytes:
    """Up to ``limit`` bytes (the first, or the last when ``tail``) of a plain file that
    the child wrote; nothing for a link to elsewhere, a second name of a file, a FIFO."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder_fd)
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return b""
        if tail:
            file.seek(max(0, info.st_size - limit))
        return file.read(limit)


def _result(folder_fd: int, code: int | None, timeout: float, memory_limit: int) -> bytes:
    """The ONNX bytes, or InvalidArtifactError saying why there are none."""
    # The child writes this line before it loads anything; a hostile model could rewrite
    # it, which would only change what this log says.
    confined = _read(folder_fd, _LOG, 200).partition(b"\n")[0].decode(errors="replace")
    if confined and confined != _FULLY_CONFINED:
        log.warning("the torch conversion ran less confined than it can be: %s", confined)
    if code == 0:
        data = _read(folder_fd, ONNX, _FILE_BYTES)
        if data:
            return data
    if log.isEnabledFor(logging.DEBUG):
        output = _read(folder_fd, _LOG, _LOG_TAIL, tail=True).decode(errors="replace")
        log.debug("torch conversion failed (exit %s): %s", code, output)
    if code is None:
        raise InvalidArtifactError(
            f"converting the model to ONNX took longer than the time limit of {timeout:g} s; "
            "export it yourself with torch.onnx.export and publish the .onnx file"
        )
    detail = _read(folder_fd, ERROR, _MAX_DETAIL) if code == FAILED else b""
    if detail:
        raise InvalidArtifactError(detail.decode(errors="replace"))
    raise InvalidArtifactError(_crash(code, memory_limit, timeout))


def _wait_unreaped(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait until the child exits (True) or ``timeout`` passes (False), leaving it unreaped
    where the system can (Linux), so that its process group can still be killed safely."""
    if not hasattr(os, "waitid"):  # macOS before Python 3.13: wait, reaping it
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout
    delay = 0.001
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        delay = min(delay * 2, left, 0.05)
        time.sleep(delay)
    return True


def _crash(code: int, memory_limit: int, timeout: float) -> str:
    """What to tell the publisher when the child died without saying why."""
    if code in (-signal.SIGXCPU, -signal.SIGKILL):
        why = f"it ran out of CPU time ({timeout:g} s) or memory ({memory_limit >> 20} MiB)"
    elif code == -signal.SIGXFSZ:
        why = "the ONNX file grew past 4 GiB"
    elif code < 0:
        why = f"it was killed by signal {-code}"
    else:
        why = f"it exited with status {code}"
    return (
        f"the model could not be converted to ONNX: {why}; export it yourself with "
        "torch.onnx.export and publish the .onnx file"
    )

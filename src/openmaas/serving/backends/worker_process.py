"""One model replica in a child process, supervised from the event loop.

The child is a fresh interpreter (``python -I``, fork+exec like multiprocessing's "spawn",
never a bare fork) that gets two pipes, a handful of locale/path variables and the artifact:
no settings, keys or database. Requests are frames (``frames.py``) written without blocking
and pipelined by id; the event loop reads answers with ``add_reader``, no thread hops.

The child writes a heartbeat every ``hang_timeout / 10`` seconds (at most 0.2 s) from its own
thread, which keeps running while a model computes (onnxruntime releases the GIL) but stops
when the process is stopped or stuck holding the GIL. A timer on the loop checks it: after
``hang_timeout`` without one the child is SIGKILLed. A crash shows up at once as the end of
its pipe and the exit of the process. Either way every pending ``run`` fails with
``WorkerUnavailableError`` and ``on_exit`` is called once; replacing the worker is the
engine's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

import openmaas
from openmaas.errors import (
    InferenceError,
    InvalidArtifactError,
    InvalidInputError,
    OpenMaaSError,
    RequestValidationError,
    TensorTooLargeError,
    WorkerUnavailableError,
    WrongModelTaskError,
    error_class_for_code,
)
from openmaas.explain.job import ExplainJob, ExplainResult
from openmaas.serving.backends.frames import (
    MAX_FRAME_BYTES,
    PREFIX,
    Part,
    decode_arrays,
    encode_arrays,
    frame_size,
)

__all__ = ["WorkerProcess"]

log = logging.getLogger(__name__)

# The child imports from the parent's sys.path (as multiprocessing's spawn does), and skips
# the package __init__ modules (the client, the data plane, the database): empty packages
# stand in for them, so it starts faster and loads only runtime code.
_BOOT = """\
import os, sys, types
sys.path[:] = sys.argv[1].split(os.pathsep)
for name in ("openmaas", "openmaas.serving", "openmaas.serving.backends"):
    package = types.ModuleType(name)
    package.__path__ = [os.path.join(sys.argv[2], *name.split(".")[1:])]
    sys.modules[name] = package
from openmaas.serving.backends._worker_main import main
sys.exit(main(sys.argv[3:]))
"""
_ENV_KEPT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "LD_LIBRARY_PATH")
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_CHILD_ERRORS = (
    InvalidInputError,
    InvalidArtifactError,
    TensorTooLargeError,
    InferenceError,
    WrongModelTaskError,
    RequestValidationError,  # explanations: cost cap, unavailable method, bad options
)
_PIPE_BYTES = 1 << 20
_CHUNK = 1 << 16
_IOV_MAX = 512
_RETRY_AFTER = 1.0


def _child_env(threads: int) -> dict[str, str]:
    env = {key: os.environ[key] for key in _ENV_KEPT if key in os.environ}
    env.update(dict.fromkeys(_THREAD_VARS, str(threads)))
    return env


def _child_error(extra: Mapping[str, Any]) -> OpenMaaSError:
    """The error a child reported; codes outside model errors become InferenceError."""
    cls = error_class_for_code(str(extra.get("code")))
    if not issubclass(cls, _CHILD_ERRORS):
        cls = InferenceError
    field = extra.get("field")
    return cls(str(extra.get("detail", ""))[:1000], field=field if isinstance(field, str) else None)


class _MessageReader:
    """Cuts a pipe's bytes into length-prefixed messages; large ones are read in place."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._body: np.ndarray | None = None  # allocated untouched: pages fill as data comes
        self._filled = 0

    def read(self, fd: int) -> list[memoryview] | None:
        """Messages one read completed (empty ones are heartbeats); None at end of file.

        Raises BlockingIOError when nothing waits and ValueError for an oversized message.
        """
        if self._body is not None:
            got = os.readv(fd, [self._body.data[self._filled :]])
            if not got:
                return None
            self._filled += got
            if self._filled < len(self._body):
                return []
            body, self._body = self._body.data, None
            return [body]
        chunk = os.read(fd, _CHUNK)
        if not chunk:
            return None
        self._buffer += chunk
        messages: list[memoryview] = []
        while len(self._buffer) >= PREFIX.size:
            (size,) = PREFIX.unpack_from(self._buffer)
            if size > MAX_FRAME_BYTES:
                raise ValueError(f"a message of {size} bytes is over the limit")
            end = PREFIX.size + size
            if len(self._buffer) >= end:
                messages.append(memoryview(self._buffer[PREFIX.size : end]))
                del self._buffer[:end]
            elif size > _CHUNK:
                self._body = np.empty(size, dtype=np.uint8)
                self._filled = len(self._buffer) - PREFIX.size
                self._body[: self._filled] = np.frombuffer(self._buffer, np.uint8)[PREFIX.size :]
                self._buffer.clear()
                break
            else:
                break
        return messages


class WorkerProcess:
    """One model replica hosted in a child process (fork+exec, like "spawn"; never fork).

    ``hang_timeout`` applies once the model is loaded; loading (during which a runtime may
    hold the GIL) has ``load_timeout``. ``close`` lets sent requests finish for up to
    ``close_timeout``. ``threads`` sets the child's OMP/MKL/OpenBLAS thread counts.
    """

    def __init__(
        self,
        format: str,
        artifact: bytes,
        *,
        name: str,
        hang_timeout: float = 2.0,
        threads: int = 1,
        on_exit: Callable[[], None] | None = None,
        load_timeout: float = 300.0,
        close_timeout: float = 5.0,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self._options = dict(options or {})
        self._format = format
        self._artifact = artifact
        self._hang_timeout = hang_timeout
        self._threads = max(1, threads)
        self._on_exit = on_exit
        self._load_timeout = load_timeout
        self._close_timeout = close_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._read_fd = self._write_fd = -1
        self._reader = _MessageReader()
        self._out: deque[memoryview] = deque()
        self._writing = False
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._streams: dict[int, Callable[[dict[str, Any]], None] | None] = {}
        self._explains: set[int] = set()  # ids answered with arrays and fields together
        self._ids = itertools.count()
        self._loaded: asyncio.Future[int] | None = None
        self._memory = 0
        self._started_at = self._last_seen = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._exit_task: asyncio.Task[None] | None = None
        self._close_task: asyncio.Future[None] | None = None
        self._starting = self._ready = self._dead = self._closing = False
        self._spawned = asyncio.Event()
        self._reason = "it was not started"

    @property
    def memory_bytes(self) -> int:
        """Memory the model took in the child, measured after loading."""
        return self._memory

    @property
    def pid(self) -> int | None:
        """The child's process id while it has not been reaped."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def alive(self) -> bool:
        """True from a successful start until the child dies, hangs or is closed."""
        return self._ready and not self._dead and not self._closing

    async def start(self) -> None:
        """Start the child and load the model; raise the load's error, leaving no process."""
        if self._starting or self._closing:
            raise RuntimeError("a WorkerProcess starts once, before it is closed")
        self._starting = True
        loop = asyncio.get_running_loop()
        child_read, parent_write = os.pipe()
        parent_read, child_write = os.pipe()
        beat = min(0.2, self._hang_timeout / 10)
        try:
            for fd in (parent_write, parent_read):
                with contextlib.suppress(OSError):  # a bigger pipe saves wake-ups, if allowed
                    fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
            paths = os.pathsep.join(path for path in sys.path if path)
            package = os.path.dirname(openmaas.__file__)
            self._proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-I", "-c", _BOOT, paths, package),
                *(str(child_read), str(child_write), str(beat)),
                stdin=subprocess.DEVNULL,
                pass_fds=(child_read, child_write),
                env=_child_env(self._threads),
            )
        except BaseException:
            os.close(parent_read)
            os.close(parent_write)
            raise
        finally:
            os.close(child_read)
            os.close(child_write)
            self._spawned.set()
        self._read_fd, self._write_fd = parent_read, parent_write
        os.set_blocking(parent_read, False)
        os.set_blocking(parent_write, False)
        self._started_at = self._last_seen = loop.time()
        self._loaded = loop.create_future()
        loop.add_reader(parent_read, self._read_once)
        self._exit_task = loop.create_task(self._watch_exit())
        self._timer = loop.call_later(beat / 2, self._tick, beat / 2)
        artifact = np.frombuffer(self._artifact, dtype=np.uint8)
        load = {"op": "load", "format": self._format, "options": self._options}
        self._send(encode_arrays({"artifact": artifact}, load))
        try:
            self._memory = await self._loaded
        except BaseException:
            if self._close_task is None:
                self._close_task = asyncio.ensure_future(self._shutdown(grace=0.0))
            await asyncio.shield(self._close_task)
            raise
        if self._closing:  # close() came while the model loaded
            raise self._unavailable()
        self._artifact = b""  # the child has its copy
        self._ready = True

    async def run(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Run the model on ``inputs``; concurrent calls are pipelined to the child.

        Keep ``inputs`` unchanged until this returns: they are written from their memory.
        """
        if not self.alive:
            raise self._unavailable()
        request_id = next(self._ids)
        parts = encode_arrays(inputs, {"op": "run", "id": request_id, "outputs": list(outputs)})
        future: asyncio.Future[dict[str, np.ndarray]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._send(parts)
        try:
            return await future
        finally:
            self._pending.pop(request_id, None)

    def run_now(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray] | None:
        """None: the model is in another process, so nothing runs on the calling thread."""
        return None

    async def explain(self, job: ExplainJob) -> ExplainResult:
        """Explain in the child, which evaluates its model as often as the job needs."""
        if not self.alive:
            raise self._unavailable()
        request_id = next(self._ids)
        arrays, fields = job.to_message()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._explains.add(request_id)
        self._send(encode_arrays(arrays, {"op": "explain", "id": request_id, **fields}))
        try:
            answer, extra = await future
            return ExplainResult.from_message(answer, extra)
        finally:
            self._pending.pop(request_id, None)
            self._explains.discard(request_id)

    async def generate(
        self,
        kind: str,
        body: Mapping[str, Any],
        on_chunk: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Run a language-model request (``chat`` or ``completion``) in the child.

        A streamed body (``"stream": true``) calls ``on_chunk`` with each chunk as it comes;
        cancelling the caller stops the generation at its next token.
        """
        if not self.alive:
            raise self._unavailable()
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._streams[request_id] = on_chunk
        self._send(
            encode_arrays({}, {"op": "generate", "id": request_id, "kind": kind, "body": body})
        )
        try:
            result: dict[str, Any] = await future
            return result
        except asyncio.CancelledError:
            if self.alive:
                self._send(encode_arrays({}, {"op": "cancel", "id": request_id}))
            raise
        finally:
            self._pending.pop(request_id, None)
            self._streams.pop(request_id, None)

    async def close(self) -> None:
        """Let the child finish what it was sent and exit; kill it after ``close_timeout``."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._shutdown(self._close_timeout))
        await asyncio.shield(self._close_task)

    async def _shutdown(self, grace: float) -> None:
        self._closing = True
        if not self._dead:
            self._reason = "it was closed"
        if self._starting:
            await self._spawned.wait()
        proc = self._proc
        if proc is None:
            return
        if not self._ready:
            grace = 0.0  # a model still loading is not worth the wait
        if not self._dead and not self._out:  # else _flush closes it after the last request
            self._close_write()
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            self._kill()
            await proc.wait()
        if self._exit_task is not None:
            await self._exit_task
        self._die("was closed")

    def _unavailable(self) -> WorkerUnavailableError:
        return WorkerUnavailableError(
            f"the worker running {self.name} stopped ({self._reason}); retry the request",
            retry_after=_RETRY_AFTER,
        )

    def _send(self, parts: list[Part]) -> None:
        views = [memoryview(p).cast("B") for p in (PREFIX.pack(frame_size(parts)), *parts)]
        self._out.extend(v for v in views if v.nbytes)
        if not self._writing:
            self._flush()

    def _flush(self) -> None:
        out = self._out
        try:
            while out:
                written = os.writev(self._write_fd, list(itertools.islice(out, _IOV_MAX)))
                while out and written >= out[0].nbytes:
                    written -= out.popleft().nbytes
                if written:
                    out[0] = out[0][written:]
        except BlockingIOError:
            if not self._writing:
                self._writing = True
                asyncio.get_running_loop().add_writer(self._write_fd, self._flush)
            return
        except OSError:
            self._die("stopped reading requests")
            return
        if self._writing:
            self._writing = False
            asyncio.get_running_loop().remove_writer(self._write_fd)
        if self._closing:
            self._close_write()

    def _close_write(self) -> None:
        """Close the request pipe: the child sees its end and exits once it has caught up."""
        if self._write_fd >= 0:
            if self._writing:
                asyncio.get_running_loop().remove_writer(self._write_fd)
                self._writing = False
            os.close(self._write_fd)
            self._write_fd = -1
        self._out.clear()

    def _read_once(self) -> bool:
        """Read what the child wrote; True if anything came."""
        if self._read_fd < 0:
            return False
        try:
            messages = self._reader.read(self._read_fd)
        except BlockingIOError:
            return False
        except (OSError, ValueError) as exc:
            self._die(f"its messages could not be read: {exc}")
            return False
        if messages is None:
            code = self._proc.returncode if self._proc is not None else None
            self._die("it exited" if code is None else f"it exited with code {code}")
            return False
        self._last_seen = asyncio.get_running_loop().time()
        for body in messages:
            if body.nbytes and not self._dead:
                self._dispatch(body)
        return True

    def _dispatch(self, body: memoryview) -> None:
        try:
            arrays, extra = decode_arrays(body)
        except ValueError as exc:
            self._die(f"it sent a malformed frame: {exc}")
            return
        op, request_id = extra.get("op"), extra.get("id")
        if op == "loaded" and self._loaded is not None and not self._loaded.done():
            memory = extra.get("memory")
            if not (isinstance(memory, int) and memory >= 0) or isinstance(memory, bool):
                memory = len(self._artifact)
            self._loaded.set_result(memory)
        elif op == "error" and request_id is None:
            if self._loaded is not None and not self._loaded.done():
                self._loaded.set_exception(_child_error(extra))
        elif op == "chunk" and type(request_id) is int:
            on_chunk = self._streams.get(request_id)
            data = extra.get("data")
            if on_chunk is not None and isinstance(data, dict):
                on_chunk(data)
        elif op in ("result", "error") and type(request_id) is int:
            future = self._pending.pop(request_id, None)
            if future is None or future.done():
                return
            if op == "error":
                future.set_exception(_child_error(extra))
            elif request_id in self._streams:
                data = extra.get("data")
                future.set_result(data if isinstance(data, dict) else {})
            elif request_id in self._explains:
                future.set_result((arrays, extra))
            else:
                future.set_result(arrays)
        else:
            self._die(f"it sent an unexpected message {op!r}")

    def _tick(self, interval: float) -> None:
        self._timer = None
        if self._dead:
            return
        self._read_once()  # heartbeats waiting while the loop was busy count as on time
        now = asyncio.get_running_loop().time()
        if self._dead:
            return
        if not self._ready and now - self._started_at > self._load_timeout:
            self._die(f"it did not load the model within {self._load_timeout:g} s")
            return
        silent = now - self._last_seen
        if self._ready and not self._closing and silent > self._hang_timeout:
            self._die(f"it hung: no heartbeat for {silent:.1f} s")
            return
        self._timer = asyncio.get_running_loop().call_later(interval, self._tick, interval)

    async def _watch_exit(self) -> None:
        assert self._proc is not None  # noqa: S101 (started before this task)
        code = await self._proc.wait()
        while not self._dead and self._read_once():
            pass  # answers the child wrote before it exited still count
        self._die(f"it exited with code {code}")

    def _kill(self) -> None:
        # os.kill, not Process.kill: Popen.poll() there could reap the child before
        # asyncio's watcher does, which then reports exit code 255.
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGKILL)

    def _die(self, reason: str) -> None:
        """Mark the worker dead (once): kill it, fail what waits, tell the engine."""
        if self._dead:
            return
        self._dead = True
        if not self._closing:
            self._reason = reason
        self._kill()
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._read_fd >= 0:
            loop.remove_reader(self._read_fd)
            os.close(self._read_fd)
            self._read_fd = -1
        self._close_write()
        if self._loaded is not None and not self._loaded.done():
            failed = f"the worker for {self.name} failed to load the model: {reason}"
            self._loaded.set_exception(
                self._unavailable() if self._closing else InferenceError(failed)
            )
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(self._unavailable())
        if self._ready and not self._closing:
            pid = self._proc.pid if self._proc is not None else None
            log.warning("worker %s (pid %s) is gone: %s", self.name, pid, reason)
            if self._on_exit is not None:  # soon, not inside a caller's run()
                loop.call_soon(self._notify, self._on_exit)

    def _notify(self, on_exit: Callable[[], None]) -> None:
        try:
            on_exit()
        except Exception:
            log.exception("on_exit of worker %s failed", self.name)

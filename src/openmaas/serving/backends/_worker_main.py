"""The entry point of a worker process: load one model, then answer requests until EOF.

Started by ``WorkerProcess`` as ``python -I -c _BOOT <path> <package> <read fd> <write fd> <beat>``.
Messages are frames (``frames.py``) on two pipes; the first one in is ``{"op": "load"}``
with the artifact, answered by ``loaded`` (and the memory it took) or ``error``. Then each
``run`` is answered by a ``result`` or an ``error`` with the same id, in order. Errors travel
as ``(code, detail)``, never as pickled exceptions. A heartbeat thread writes an empty message
every few tenths of a second: it stops when the process is stopped or a call holds the GIL,
which is how the parent tells a hung worker from a busy one.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from openmaas.errors import (
    InferenceError,
    InvalidArtifactError,
    OpenMaaSError,
    WrongModelTaskError,
)
from openmaas.runtimes import Runtime, load_runtime
from openmaas.serving.backends.frames import (
    HEARTBEAT,
    PREFIX,
    Part,
    decode_arrays,
    encode_arrays,
    frame_size,
)
from openmaas.serving.backends.local import public_message, run_runtime

__all__ = ["main"]

_IOV_MAX = 512
# onnxruntime's statuses that mean the bytes are not a model it can load.
_ARTIFACT_FAULTS = frozenset({"InvalidProtobuf", "InvalidGraph", "NoModel", "NotImplemented"})
# Imported before the memory baseline, so that a model's memory leaves out the library's.
_RUNTIME_MODULES = {
    "onnx": "openmaas.runtimes.onnx_runtime",
    "gguf": "openmaas.runtimes.gguf",
    "text-onnx": "openmaas.runtimes.text_encoder",
}


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Channel:
    """Blocking reads of whole messages; writes from any thread, one message at a time."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._reader = io.BufferedReader(io.FileIO(read_fd, "rb"), buffer_size=1 << 16)
        self._write_fd = write_fd
        self._lock = threading.Lock()

    def _read_exact(self, size: int) -> memoryview | None:
        view, filled = np.empty(size, dtype=np.uint8).data, 0  # not zeroed: it is filled
        while filled < size:
            got = self._reader.readinto(view[filled:])
            if not got:
                return None
            filled += got
        return view

    def receive(self) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The next message (heartbeats skipped); None when the parent has gone."""
        while True:
            prefix = self._read_exact(PREFIX.size)
            if prefix is None:
                return None
            (size,) = PREFIX.unpack(prefix)
            if size:
                body = self._read_exact(size)
                return None if body is None else decode_arrays(body)

    def send(self, extra: dict[str, Any]) -> None:
        """Send a message without arrays."""
        self.send_frame(encode_arrays({}, extra))

    def send_frame(self, parts: Sequence[Part]) -> None:
        self._write([PREFIX.pack(frame_size(list(parts))), *parts])

    def beat(self) -> None:
        self._write([HEARTBEAT])

    def _write(self, parts: Sequence[Part]) -> None:
        views = [memoryview(part).cast("B") for part in parts if memoryview(part).nbytes]
        with self._lock:
            while views:
                written = os.writev(self._write_fd, views[:_IOV_MAX])
                while views and written >= views[0].nbytes:
                    written -= views.pop(0).nbytes
                if written:
                    views[0] = views[0][written:]


def _beat_forever(channel: _Channel, interval: float) -> None:
    while True:
        time.sleep(interval)
        try:
            channel.beat()
        except OSError:  # the parent has gone: nobody wants the answer being computed
            os._exit(0)


def _failure(detail: str) -> dict[str, Any]:
    return {"code": InferenceError.code, "detail": detail}


def _load_error(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, OpenMaaSError):
        return {"code": exc.code, "detail": exc.detail, "field": exc.field}
    message = f"the worker could not load the model: {public_message(exc)}"
    if type(exc).__name__ in _ARTIFACT_FAULTS:
        return {"code": InvalidArtifactError.code, "detail": message}
    return _failure(message)


def _load(channel: _Channel) -> tuple[Runtime, bytes | None] | None:
    """Load the model the parent sends and report how much memory it took.

    An ONNX artifact is kept too: explanations read tree ensembles and gradients from it.
    """
    message = channel.receive()
    if message is None:
        return None
    arrays, extra = message
    model_format = str(extra.get("format"))
    options = extra.get("options") or {}
    artifact = arrays["artifact"].tobytes()
    del arrays, message
    try:
        if model_format in _RUNTIME_MODULES:
            __import__(_RUNTIME_MODULES[model_format])
        before = _rss_bytes()
        runtime = load_runtime(model_format, artifact, options)
        measured = _rss_bytes() - before
    except Exception as exc:
        channel.send({"op": "error", "id": None, **_load_error(exc)})
        return None
    kept = artifact if model_format == "onnx" else None
    memory = max(measured, len(artifact)) + (len(kept) if kept else 0)
    channel.send({"op": "loaded", "memory": memory})
    return runtime, kept


def _serve(channel: _Channel, runtime: Runtime, artifact: bytes | None) -> None:
    cache: dict[str, Any] = {}  # what explanations parsed from the artifact
    while (message := channel.receive()) is not None:
        arrays, extra = message
        request_id = extra.get("id")
        if extra.get("op") == "generate":
            refusal = {"code": WrongModelTaskError.code, "detail": "this model generates no text"}
            channel.send({"op": "error", "id": request_id, **refusal})
            continue
        if extra.get("op") == "run":
            _run(channel, runtime, arrays, extra)
        elif extra.get("op") == "explain":
            _explain(channel, runtime, artifact, cache, arrays, extra)


def _explain(
    channel: _Channel,
    runtime: Runtime,
    artifact: bytes | None,
    cache: dict[str, Any],
    arrays: dict[str, np.ndarray],
    extra: dict[str, Any],
) -> None:
    """Answer one ``explain`` with the explanation (arrays and fields) or its error."""
    from openmaas.explain.execute import execute
    from openmaas.explain.job import ExplainJob

    request_id = extra.get("id")
    try:
        result = execute(ExplainJob.from_message(arrays, extra), runtime, artifact, cache)
        answer, fields = result.to_message()
        parts = encode_arrays(answer, {"op": "result", "id": request_id, **fields})
    except OpenMaaSError as exc:
        reply = {"code": exc.code, "detail": exc.detail, "field": exc.field}
        channel.send({"op": "error", "id": request_id, **reply})
        return
    except Exception as exc:
        detail = f"the explanation failed: {public_message(exc)}"
        channel.send({"op": "error", "id": request_id, **_failure(detail)})
        return
    channel.send_frame(parts)


def _run(
    channel: _Channel, runtime: Runtime, arrays: dict[str, np.ndarray], extra: dict[str, Any]
) -> None:
    """Answer one ``run`` (an inference on tensors) with its result or its error."""
    request_id = extra.get("id")
    try:
        outputs = [str(name) for name in extra.get("outputs", [])]
        result = run_runtime(runtime, arrays, outputs)
        parts = encode_arrays(result, {"op": "result", "id": request_id})
    except OpenMaaSError as exc:
        reply = {"code": exc.code, "detail": exc.detail, "field": exc.field}
        channel.send({"op": "error", "id": request_id, **reply})
        return
    except Exception as exc:  # e.g. an output that no frame can carry
        detail = f"the worker could not return the result: {public_message(exc)}"
        channel.send({"op": "error", "id": request_id, **_failure(detail)})
        return
    channel.send_frame(parts)


def _serve_generations(channel: _Channel, runtime: Any) -> None:
    """Language models: requests run concurrently, one thread per slot, and stream back.

    ``generate`` carries an OpenAI-shaped body; a streamed one sends a ``chunk`` message per
    chunk, then (like any) a ``result``. ``cancel`` stops a stream at its next token. ``run``
    (OIP inference: prompts in ``text_input``) is answered like any model's.
    """
    stopped: set[Any] = set()
    with ThreadPoolExecutor(max_workers=runtime.slots, thread_name_prefix="slot") as pool:
        while (message := channel.receive()) is not None:
            _, extra = message
            op, request_id = extra.get("op"), extra.get("id")
            if op == "cancel":
                stopped.add(request_id)
            elif op == "generate":
                pool.submit(_generate, channel, runtime, extra, stopped)
            elif op == "run":
                pool.submit(_run, channel, runtime, message[0], extra)
            elif op == "explain":
                refusal = {
                    "code": WrongModelTaskError.code,
                    "detail": "language models are explained by prompt attribution",
                }
                channel.send({"op": "error", "id": request_id, **refusal})
        stopped.add(_EVERYTHING)  # the parent has gone: stop every stream


_EVERYTHING = object()


def _generate(channel: _Channel, runtime: Any, extra: dict[str, Any], stopped: set[Any]) -> None:
    request_id, body = extra.get("id"), extra.get("body")

    def emit(chunk: dict[str, Any]) -> bool:
        channel.send({"op": "chunk", "id": request_id, "data": chunk})
        return request_id in stopped or _EVERYTHING in stopped

    try:
        streaming = isinstance(body, dict) and body.get("stream") is True
        result = runtime.generate(str(extra.get("kind")), body, emit if streaming else None)
    except Exception as exc:
        detail = f"the model failed: {public_message(exc)}"
        channel.send({"op": "error", "id": request_id, **_failure(detail)})
    else:
        channel.send({"op": "result", "id": request_id, "data": result})
    finally:
        stopped.discard(request_id)


def main(argv: Sequence[str]) -> int:
    """Serve one model over the pipes named in ``argv``: read fd, write fd, beat seconds."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this ends
    read_fd, write_fd, interval = int(argv[0]), int(argv[1]), float(argv[2])
    channel = _Channel(read_fd, write_fd)
    threading.Thread(
        target=_beat_forever, args=(channel, interval), name="heartbeat", daemon=True
    ).start()
    try:
        loaded = _load(channel)
        if loaded is None:
            return 1
        runtime, artifact = loaded
        try:
            if hasattr(runtime, "generate"):
                _serve_generations(channel, runtime)
            else:
                _serve(channel, runtime, artifact)
        finally:
            runtime.unload()
    except BrokenPipeError:  # the parent has gone
        return 0
    return 0

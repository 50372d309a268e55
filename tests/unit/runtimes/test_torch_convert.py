"""PyTorch uploads become ONNX in a confined child process; the server never loads them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from openmaas.errors import InvalidArtifactError
from openmaas.runtimes import torch_convert
from openmaas.runtimes.torch_convert import convert_to_onnx, looks_like_torch
from tests.helpers.models import identity_model

torch = pytest.importorskip("torch")

pytestmark = [
    # torch 2.9+ deprecates TorchScript in favour of torch.export; these tests save
    # TorchScript on purpose, as researchers still publish it.
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"),
    # Tracing nn.LSTM turns its shape checks into constants (the ONNX export is checked).
    pytest.mark.filterwarnings("ignore:Converting a tensor to a Python boolean"),
]


class _CNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.dense = torch.nn.Linear(4 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.dense(x.flatten(1))


class _LSTM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(3, 8, batch_first=True)
        self.dense = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps, _ = self.lstm(x)
        return self.dense(steps[:, -1])


class _Loop(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while bool(x.sum() > -1.0):  # never false for the inputs given: runs until killed
            x = x + 1.0
        return x


def _model(cls: type[torch.nn.Module]) -> torch.nn.Module:
    torch.manual_seed(0)
    return cls().eval()


def _torchscript(model: torch.nn.Module, example: torch.Tensor | None = None) -> bytes:
    """``torch.jit.save`` of the model, traced on ``example`` or else scripted."""
    compiled = torch.jit.script(model) if example is None else torch.jit.trace(model, example)
    buffer = io.BytesIO()
    torch.jit.save(compiled, buffer)
    return buffer.getvalue()


def _exported(model: torch.nn.Module, example: torch.Tensor, dynamic: bool = True) -> bytes:
    """``torch.export.save`` of the model, with a dynamic batch when ``dynamic``."""
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    program = torch.export.export(model, (example,), dynamic_shapes=shapes)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def _assert_same(onnx_model: bytes, model: torch.nn.Module, shape: tuple[int, ...]) -> None:
    """The ONNX model gives torch's outputs for batches of 1 and 7 (its batch is dynamic)."""
    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    (name,) = (value.name for value in session.get_inputs())
    for batch in (1, 7):
        x = torch.randn(batch, *shape[1:], generator=torch.Generator().manual_seed(batch))
        (got,) = session.run(None, {name: x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(got, model(x).numpy(), atol=1e-5)


def _children() -> list[int]:
    """Process ids whose parent is this process."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # it ended while we looked
                continue
            if int(fields[1]) == os.getpid():
                found.append(int(entry.name))
    return found


def test_traced_cnn_converts_in_a_child_and_the_server_never_imports_torch(
    tmp_path: Path,
) -> None:
    model = _model(_CNN)
    (tmp_path / "model.pt").write_bytes(_torchscript(model, torch.randn(2, 1, 8, 8)))
    script = (
        "import sys; from pathlib import Path\n"
        "from openmaas.runtimes.torch_convert import convert_to_onnx\n"
        "onnx = convert_to_onnx(Path(sys.argv[1]).read_bytes())\n"
        "Path(sys.argv[2]).write_bytes(onnx)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxscript')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model.pt"), str(tmp_path / "m.onnx")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == "[]"  # torch ran only in the conversion's child
    onnx_model = (tmp_path / "m.onnx").read_bytes()
    _assert_same(onnx_model, model, (2, 1, 8, 8))
    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("x", ["batch", 1, 8, 8])]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [("output", ["batch", 10])]


def test_scripted_lstm_converts_with_input_shapes() -> None:
    model = _model(_LSTM)
    onnx_model = convert_to_onnx(_torchscript(model), input_shapes={"x": [2, 5, 3]})
    _assert_same(onnx_model, model, (2, 5, 3))


def test_scripted_model_without_shapes_asks_for_input_shapes() -> None:
    with pytest.raises(InvalidArtifactError) as caught:
        convert_to_onnx(_torchscript(_model(_CNN)))
    detail = str(caught.value)
    assert "TorchScript models need an example input shape" in detail
    assert 'input_shapes with a shape for each input, batch first, e.g. {"x": [' in detail


# torch.export says this of nn.LSTM's own weights list (torch's code, not the test's).
@pytest.mark.filterwarnings("ignore:The tensor attributes self.lstm._flat_weights")
def test_an_export_program_converts_with_its_dynamic_batch() -> None:
    model = _model(_LSTM)
    onnx_model = convert_to_onnx(_exported(model, torch.randn(2, 5, 3)))
    _assert_same(onnx_model, model, (2, 5, 3))
    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("x", ["batch", 5, 3])]


def test_export_program_with_a_fixed_batch_is_refused() -> None:
    data = _exported(_model(_CNN), torch.randn(2, 1, 8, 8), dynamic=False)
    with pytest.raises(InvalidArtifactError, match=r"fixed batch size \(2\) for input 'x'"):
        convert_to_onnx(data)


def test_looks_like_torch_reads_member_names_only() -> None:
    cnn = _model(_CNN)
    assert looks_like_torch(_torchscript(cnn, torch.randn(1, 1, 8, 8))) == "torchscript"
    assert looks_like_torch(_exported(cnn, torch.randn(2, 1, 8, 8))) == "torch-export"
    checkpoint = io.BytesIO()
    torch.save(cnn.state_dict(), checkpoint)  # weights without code: not convertible
    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("archive/readme.txt", "hello")
    for other in (checkpoint.getvalue(), plain.getvalue(), identity_model(), b"PK\x03\x04xx"):
        assert looks_like_torch(other) is None


def test_uploads_that_are_not_torch_archives_are_refused_without_a_child() -> None:
    for data in (b"garbage", identity_model()):
        with pytest.raises(InvalidArtifactError, match="not a TorchScript"):
            convert_to_onnx(data)


def test_a_corrupt_torchscript_archive_is_refused_with_the_reason() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", b"not a pickle")
        archive.writestr("archive/code/__torch__.py", "garbage(")
    with pytest.raises(InvalidArtifactError, match="could not be converted to ONNX") as caught:
        convert_to_onnx(buffer.getvalue(), input_shapes={"x": [1, 4]})
    detail = str(caught.value)
    assert "export it yourself with torch.onnx.export" in detail
    assert "/tmp" not in detail  # no paths of the server
    assert "site-packages" not in detail


def test_bad_input_shapes_are_refused_before_a_child_starts() -> None:
    data = _torchscript(_model(_CNN))
    for shapes in ({"x": [0, 1]}, {"x": [-1, 8]}, {"x": "1,8"}, {"x": []}, {"x": [1.5]}):
        with pytest.raises(InvalidArtifactError, match="input_shapes") as caught:
            convert_to_onnx(data, input_shapes=shapes)
        assert caught.value.field == "input_shapes"


def test_without_torch_the_error_says_what_to_publish(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_convert, "find_spec", lambda name: None)
    with pytest.raises(InvalidArtifactError, match=r"torch is not installed on this server"):
        convert_to_onnx(_torchscript(_model(_CNN), torch.randn(1, 1, 8, 8)))


def test_the_time_limit_kills_the_child_and_leaves_nothing_behind() -> None:
    data = _torchscript(_model(_CNN), torch.randn(1, 1, 8, 8))
    before = set(_children())  # e.g. the session's live server
    with pytest.raises(InvalidArtifactError, match=r"longer than the time limit of 0\.001 s"):
        convert_to_onnx(data, timeout=0.001)
    assert set(_children()) <= before


def test_a_model_that_loops_is_stopped_at_the_time_limit() -> None:
    data = _torchscript(_model(_Loop))
    before = set(_children())
    started = time.monotonic()
    with pytest.raises(InvalidArtifactError, match="longer than the time limit of 4 s"):
        convert_to_onnx(data, input_shapes={"x": [1, 2]}, timeout=4)
    assert time.monotonic() - started < 30  # stopped, not left to loop
    assert set(_children()) <= before


def test_the_memory_limit_stops_a_conversion_that_needs_more() -> None:
    data = _torchscript(_model(_CNN), torch.randn(1, 1, 8, 8))
    # torch alone maps more than 256 MiB: the child fails as it loads it.
    with pytest.raises(InvalidArtifactError, match="needed more than this server's 256 MiB"):
        convert_to_onnx(data, memory_limit=256 << 20)


def test_the_child_cannot_read_outside_its_folder_nor_reach_the_network(
    tmp_path: Path,
) -> None:
    work, secret = tmp_path / "work", tmp_path / "secret.txt"
    work.mkdir()
    secret.write_text("key")
    script = (
        "import json, os, socket, sys\n"
        "from openmaas.runtimes._confine import confine\n"
        "applied = confine(sys.argv[1], memory=2 << 30, cpu_seconds=10, file_bytes=1 << 20)\n"
        "denied = {}\n"
        "paths = {'secret': sys.argv[2], 'server': f'/proc/{sys.argv[3]}/environ'}\n"
        "for name, path in paths.items():\n"
        "    try:\n"
        "        open(path).read(); denied[name] = False\n"
        "    except PermissionError:\n"
        "        denied[name] = True\n"
        "open(os.path.join(sys.argv[1], 'out'), 'w').write('ok')\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', 9), timeout=2); denied['network'] = False\n"
        "except OSError as exc:\n"
        "    denied['network'] = not isinstance(exc, ConnectionRefusedError)\n"
        "print(json.dumps({'applied': applied, 'denied': denied}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(work), str(secret), str(os.getpid())],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PATH": os.environ.get("PATH", "")},
    )
    result = json.loads(out.stdout)
    assert (work / "out").read_text() == "ok"
    applied, denied = result["applied"], result["denied"]
    # Where the kernel offers Landlock and network namespaces (as here), they hold.
    assert denied["secret"] == applied["files"]
    assert denied["server"] == applied["files"]
    assert denied["network"] or not applied["network"]


def test_processes_that_the_child_starts_end_with_it(tmp_path: Path) -> None:
    script = (
        "import json, os, sys, time\n"
        "from openmaas.runtimes._confine import confine\n"
        "applied = confine(sys.argv[1], memory=2 << 30, cpu_seconds=10, file_bytes=1 << 20)\n"
        "if os.fork() == 0:  # a stray that leaves the process group and would sleep on\n"
        "    os.setsid()\n"
        "    os.close(1)\n"
        "    os.close(2)\n"
        "    with open(os.path.join(sys.argv[1], 'stray'), 'w') as file:\n"
        "        file.write(os.readlink('/proc/self'))  # its pid outside the namespace\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "while not os.path.exists(os.path.join(sys.argv[1], 'stray')):\n"
        "    time.sleep(0.01)\n"
        "print(json.dumps(applied))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PATH": os.environ.get("PATH", "")},
    )
    applied = json.loads(out.stdout)
    stray = Path("/proc", (tmp_path / "stray").read_text())
    deadline = time.monotonic() + 5
    while _alive(stray) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive(stray) is not applied["processes"]
    if _alive(stray):  # only where the kernel refused a PID namespace
        os.kill(int(stray.name), 9)


def _alive(proc: Path) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

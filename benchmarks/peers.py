#!/usr/bin/env python3
"""Measure OpenMaaS side by side with other serving stacks, through the shared harness.

Runs the serving benchmark harness (``../shared/bench``: wrk against one server pinned to one
core, answers checked against onnxruntime) on the ``openmaas`` target of
``benchmarks/openmaas_target.py`` (API keys, rate limits and quotas on), together with its two
baselines, which always run: ``raw-uvicorn`` (a raw ASGI app answering a constant: the Python
HTTP ceiling) and ``uvicorn-ort`` (the same app running the model per request: a minimal
hand-written server). Other peers (``--peers kserve,pytriton``) are optional; without them the
best peer figures come from the harness's own ``results/latest.md``, labelled as reference
numbers from that file (another run, so compare them with care).

Steps: copy the harness to a writable work folder (once), link ``$BENCH_VENVS/openmaas`` to
this checkout's ``.venv``, patch the copy so that the start check and wrk send the
``Authorization`` header of targets that need one (``$BENCH_AUTH_DIR/<port>``, written by
``bench_server.py``; no other target gets a header), run ``run.sh``, print a compact table.

    benchmarks/peers.py --rounds 1 --duration 3 --conc 1,8      # smoke run
    benchmarks/peers.py --peers kserve,pytriton,mlserver-batch  # needs those venvs
    benchmarks/peers.py --setup --peers kserve                  # create missing venvs first

The numbers mean something only on a quiet machine: the harness waits for one (``--max-wait``)
and repeats disturbed points (``--retries``). Exit status: 0 when every target started,
answered correctly and OpenMaaS saw no errors; 1 otherwise; the harness's status if it failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
TARGET_FILE = BENCHMARKS / "openmaas_target.py"
OURS = "openmaas"
BASELINES = ("raw-uvicorn", "uvicorn-ort")  # run.py adds raw-uvicorn (and inproc-ort) itself
PEER_ROLES = ("peer", "variant")
# the harness README's own defaults (outside the repository, shared by its venvs)
DEFAULT_WORK = "/tmp/bench"  # noqa: S108
DEFAULT_VENVS = "/tmp/bench-venvs"  # noqa: S108

# The two patches of the harness copy. Each is applied once (the marker says it is there) and
# fails loudly when its anchor is gone, i.e. when the harness changed under us.
MARKER = "BENCH_AUTH_DIR"
RUN_PY_ANCHOR = (
    "def http_post(url, body, ctype, timeout=5.0):\n"
    '    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype}, '
    'method="POST")\n'
)
RUN_PY_PATCH = '''def _auth_headers(url):
    """Authorization header of the target at url's port: $BENCH_AUTH_DIR/<port> (openmaas)."""
    import urllib.parse
    auth_dir = os.environ.get("BENCH_AUTH_DIR")
    if not auth_dir:
        return {}
    try:
        with open(os.path.join(auth_dir, str(urllib.parse.urlsplit(url).port))) as f:
            return {"Authorization": f.readline().strip()}
    except OSError:
        return {}


def http_post(url, body, ctype, timeout=5.0):
    headers = {"Content-Type": ctype, **_auth_headers(url)}
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
'''
POST_LUA_ANCHOR = '  wrk.headers["Content-Type"] = ctype\n'
POST_LUA_PATCH = """  wrk.headers["Content-Type"] = ctype
  -- Authorization header of the target at this port, if it needs one: $BENCH_AUTH_DIR/<port>
  local auth_dir = os.getenv("BENCH_AUTH_DIR")
  if auth_dir then
    local h = io.open(auth_dir .. "/" .. tostring(wrk.port), "r")
    if h then
      wrk.headers["Authorization"] = h:read("*l")
      h:close()
    end
  end
"""


@dataclass(frozen=True)
class Point:
    """One target at one shape and concurrency."""

    rps: float
    p99_ms: float
    errors: int
    source: str = ""  # "" = measured in this run; else the reference file it came from
    mean_batch: float | None = None


class HarnessError(Exception):
    """The harness could not be prepared or run."""


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bench",
        type=Path,
        default=REPO.parent / "shared" / "bench",
        help="the harness to copy from (default: ../shared/bench next to the repository)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(os.environ.get("BENCH_WORK_DIR", DEFAULT_WORK)),
        help="writable copy of the harness, made if missing ($BENCH_WORK_DIR, /tmp/bench)",
    )
    parser.add_argument(
        "--venvs",
        type=Path,
        default=Path(os.environ.get("BENCH_VENVS", DEFAULT_VENVS)),
        help="the harness's venvs ($BENCH_VENVS, /tmp/bench-venvs)",
    )
    parser.add_argument(
        "--peers", default="", help="other targets to run too, e.g. kserve,pytriton (default none)"
    )
    parser.add_argument(
        "--setup",
        action="store_true",
        help="create missing venvs (base and the peers') with the harness's setup_envs.sh",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (harness default 2)")
    parser.add_argument("--duration", type=int, help="timed seconds per point (default 8, <= 20)")
    parser.add_argument("--warmup", type=int, help="untimed seconds before each point (default 2)")
    parser.add_argument("--conc", help="concurrencies, e.g. 1,8,64 (harness default)")
    parser.add_argument("--shapes", help="request shapes: tabular,cnn (harness default)")
    parser.add_argument("--retries", type=int, help="repeat a disturbed point up to N times")
    parser.add_argument("--max-wait", type=float, help="most seconds to wait for a quiet machine")
    parser.add_argument("--quiet-cpu", type=float, help="most cores others may use (default 0.3)")
    parser.add_argument("--no-wait", action="store_true", help="measure at once, even if busy")
    parser.add_argument(
        "--out",
        type=Path,
        help="results folder (default <work>/results-openmaas; the harness's results/ keeps "
        "its reference numbers)",
    )
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="copy, link and patch the harness, print the run.sh command, run nothing",
    )
    return parser.parse_args(argv)


# -- preparing the harness ----------------------------------------------------------------


def prepare_work_dir(source: Path, work: Path) -> None:
    """Copy the harness to ``work`` unless it is there already, and make the copy writable."""
    if (work / "run.py").is_file():
        return
    if not (source / "run.py").is_file():
        raise HarnessError(f"no harness at {source} (run.py missing); pass --bench DIR")
    if work.exists() and any(work.iterdir()):
        raise HarnessError(f"{work} exists but holds no harness; pass another --work DIR")
    print(f"copying the harness {source} -> {work}", flush=True)
    shutil.copytree(source, work, dirs_exist_ok=True)
    for path in [work, *work.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def _patch_file(path: Path, anchor: str, replacement: str) -> bool:
    """Apply one patch unless it is there; True when the file changed."""
    text = path.read_text()
    if MARKER in text:
        return False
    if text.count(anchor) != 1:
        raise HarnessError(
            f"cannot add the Authorization header to {path}: the text it patches is not there "
            "(the harness changed); update RUN_PY_ANCHOR / POST_LUA_ANCHOR in benchmarks/peers.py"
        )
    path.write_text(text.replace(anchor, replacement))
    return True


def patch_auth(work: Path) -> None:
    """Make the harness copy send ``$BENCH_AUTH_DIR/<port>`` as the Authorization header."""
    for path, anchor, patch in (
        (work / "run.py", RUN_PY_ANCHOR, RUN_PY_PATCH),
        (work / "loadgen" / "post.lua", POST_LUA_ANCHOR, POST_LUA_PATCH),
    ):
        if _patch_file(path, anchor, patch):
            print(f"patched {path} (Authorization header from $BENCH_AUTH_DIR)", flush=True)


def link_venv(venvs: Path) -> None:
    """Point ``$BENCH_VENVS/openmaas`` at this checkout's ``.venv``."""
    project_venv = REPO / ".venv"
    if not (project_venv / "bin" / "python").exists():
        raise HarnessError(f"{project_venv} missing: run scripts/install dev first")
    link = venvs / OURS
    if link.is_symlink() and link.resolve() == project_venv.resolve():
        return
    if link.exists() and not link.is_symlink():
        raise HarnessError(f"{link} is a real folder, not a link to {project_venv}: remove it")
    venvs.mkdir(parents=True, exist_ok=True)
    tmp = venvs / f".{OURS}.link-{os.getpid()}"
    tmp.symlink_to(project_venv)
    tmp.replace(link)


def load_harness_targets(work: Path) -> list[Any]:
    """The harness's own TARGETS (plain Python, no dependencies)."""
    spec = importlib.util.spec_from_file_location("bench_targets", work / "targets.py")
    if spec is None or spec.loader is None:
        raise HarnessError(f"cannot load {work / 'targets.py'}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.TARGETS)


def check_venvs(args: argparse.Namespace, peers: list[str], work: Path) -> None:
    """Every venv the run needs exists, or is created with ``--setup``."""
    targets = {t.name: t for t in load_harness_targets(work)}
    ours = {"openmaas-process"}  # variants in openmaas_target.py, run from this checkout's venv
    unknown = [p for p in peers if p not in targets and p not in ours]
    if unknown:
        known = ", ".join(n for n, t in targets.items() if t.role in PEER_ROLES)
        raise HarnessError(f"unknown peer(s) {', '.join(unknown)}; choose from {known}")
    needed = ["base", *dict.fromkeys(targets[p].venv or "base" for p in peers if p not in ours)]
    missing = [v for v in dict.fromkeys(needed) if not (args.venvs / v / "bin" / "python").exists()]
    if missing and args.setup:
        print(f"creating venvs {', '.join(missing)} (setup_envs.sh)", flush=True)
        env = {**os.environ, "BENCH_VENVS": str(args.venvs)}
        subprocess.run([str(work / "setup_envs.sh"), *missing], cwd=work, env=env, check=True)
    elif missing:
        raise HarnessError(
            f"venv(s) {', '.join(missing)} missing under {args.venvs}: pass --setup, or run "
            f"'cd {work} && BENCH_VENVS={args.venvs} ./setup_envs.sh {' '.join(missing)}'"
        )


def harness_command(args: argparse.Namespace, peers: list[str], out: Path) -> list[str]:
    """``run.sh --extra-targets ... --only openmaas,uvicorn-ort,<peers>`` plus the options."""
    only = ",".join(dict.fromkeys([OURS, *BASELINES, *peers]))
    cmd = [str(args.work / "run.sh"), "--extra-targets", str(TARGET_FILE), "--only", only]
    cmd += ["--out", str(out)]
    for flag, value in (
        ("--rounds", args.rounds),
        ("--duration", args.duration),
        ("--warmup", args.warmup),
        ("--conc", args.conc),
        ("--shapes", args.shapes),
        ("--retries", args.retries),
        ("--max-wait", args.max_wait),
        ("--quiet-cpu", args.quiet_cpu),
    ):
        if value is not None:
            cmd += [flag, str(value)]
    if args.no_wait:
        cmd.append("--no-wait")
    return cmd


# -- reading results ----------------------------------------------------------------------


def _number(cell: str) -> float | None:
    match = re.match(r"\s*([0-9][0-9,]*(?:\.[0-9]+)?)", cell)
    return float(match.group(1).replace(",", "")) if match else None


def read_reference(path: Path) -> tuple[dict[str, str], dict[tuple[str, str, int], Point]]:
    """Roles and points of a harness report (``results/latest.md``): its Detail table."""
    roles: dict[str, str] = {}
    points: dict[tuple[str, str, int], Point] = {}
    if not path.is_file():
        return roles, points
    section = ""
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            section = line
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or cells[0] in ("target", "model") or cells[0].startswith("-"):
            continue
        if "throughput and ratios" in section and len(cells) > 2:
            roles[cells[0]] = cells[1]
        elif section.startswith("## Detail") and len(cells) >= 7:
            rps, p99 = _number(cells[3]), _number(cells[5])
            if rps is None or p99 is None or not cells[2].isdigit():
                continue
            points[(cells[0], cells[1], int(cells[2]))] = Point(
                rps, p99, int(_number(cells[6]) or 0), source=str(path)
            )
    return roles, points


def read_run(path: Path) -> tuple[dict[str, Any], dict[tuple[str, str, int], Point], list[str]]:
    """Meta, points and problems (failed targets, wrong answers) of this run's JSON."""
    data = json.loads(path.read_text())
    points: dict[tuple[str, str, int], Point] = {}
    problems: list[str] = []
    for name, entry in data["summary"].items():
        bad = [s for s in entry.get("status", []) if s != "ok"]
        if bad:
            problems.append(f"{name}: {'; '.join(bad)}")
        for shape in data["meta"]["shapes"]:
            for conc, d in entry.get(shape, {}).items():
                if not d.get("answer_ok", True):
                    problems.append(f"{name} {shape} c={conc}: wrong answer after the load")
                points[(name, shape, int(conc))] = Point(
                    d["rps"], d["p99_ms"], d["errors"], mean_batch=d.get("mean_batch")
                )
    return data["meta"], points, problems


# -- the table ----------------------------------------------------------------------------


def _rps(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def _cell(p: Point | None, p99: bool = True) -> str:
    if p is None:
        return "-"
    text = _rps(p.rps) + (f" ({p.p99_ms:.1f})" if p99 else "")
    return text + (f" [{p.errors} err]" if p.errors else "")


def _ratio(a: Point | None, b: Point | None) -> str:
    return f"{a.rps / b.rps:.2f}" if a and b and b.rps else "-"


def _best(
    points: dict[tuple[str, str, int], Point], names: Iterable[str], shape: str, conc: int
) -> tuple[str, Point] | None:
    found = [
        (n, points[(n, shape, conc)])
        for n in names
        if (n, shape, conc) in points and not n.startswith("openmaas")  # ours are no peers
    ]
    return max(found, key=lambda item: item[1].rps) if found else None


def _drift(
    meta: dict[str, Any],
    run: dict[tuple[str, str, int], Point],
    ref: dict[tuple[str, str, int], Point],
) -> str:
    """Median req/s of the baselines in this run over the reference run's, e.g. '0.7x'."""
    parts = []
    for name in BASELINES:
        ratios = [
            run[key].rps / ref[key].rps
            for shape in meta["shapes"]
            for conc in meta["conc"]
            if (key := (name, shape, conc)) in run and key in ref and ref[key].rps
        ]
        if ratios:
            parts.append(f"{name} {statistics.median(ratios):.2f}x")
    return ", ".join(parts)


def render(
    meta: dict[str, Any],
    run: dict[tuple[str, str, int], Point],
    peers: list[str],
    ref_roles: dict[str, str],
    ref: dict[tuple[str, str, int], Point],
    ref_file: Path,
) -> str:
    """Markdown: per shape x concurrency, OpenMaaS next to the baselines and the peers."""
    ref_peers = [n for n, role in ref_roles.items() if role in PEER_ROLES]
    use_ref = not peers and bool(ref)
    lines = [
        f"# OpenMaaS vs peers ({meta['run_id']})",
        "",
        f"{meta['rounds']} round(s), {meta['duration_s']} s per point; server on CPU "
        f"{meta['server_cpus']}, wrk on CPU {meta['client_cpus']}. Cells: req/s (p99 ms); "
        "errors only when not zero; batch = mean rows per onnxruntime call. OpenMaaS runs with "
        "API-key auth (consumer key), rate limits, quotas and the fair scheduler on.",
        "",
    ]
    peer_heads = [f"{p} req/s (p99)" for p in peers]
    best_head = "best peer (ref) req/s" if use_ref else "best peer req/s"
    head = [
        "shape",
        "c",
        "openmaas req/s (p99)",
        "batch",
        "raw-uvicorn req/s",
        "uvicorn-ort req/s (p99)",
        *peer_heads,
        best_head,
        "openmaas / best peer",
        "openmaas / uvicorn-ort",
    ]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for shape in meta["shapes"]:
        for conc in meta["conc"]:
            ours = run.get((OURS, shape, conc))
            ort_ref = run.get(("uvicorn-ort", shape, conc))
            best = _best(ref, ref_peers, shape, conc) if use_ref else _best(run, peers, shape, conc)
            best_point = best[1] if best else None
            batch = "-" if ours is None or ours.mean_batch is None else f"{ours.mean_batch:.2f}"
            row = [
                shape,
                str(conc),
                _cell(ours),
                batch,
                _cell(run.get(("raw-uvicorn", shape, conc)), p99=False),
                _cell(ort_ref),
                *[_cell(run.get((p, shape, conc))) for p in peers],
                f"{best[0]} {_cell(best_point)}" if best else "-",
                _ratio(ours, best_point),
                _ratio(ours, ort_ref),
            ]
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if use_ref:
        lines.append(
            f"best peer (ref): reference numbers from {ref_file} (best of its peers and "
            "variants; another run, possibly another machine state): rerun with --peers to "
            "measure them side by side."
        )
        drift = _drift(meta, run, ref)
        if drift:
            lines.append(
                f"Baselines now vs that reference run: {drift} (the ratios to reference "
                "numbers mean something only when these are near 1)."
            )
    elif not peers:
        lines.append(f"no peers measured and no reference numbers in {ref_file}.")
    return "\n".join(lines) + "\n"


# -- main ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Prepare, run the harness, print the table; the exit status."""
    peers = [p for p in dict.fromkeys(args.peers.split(",")) if p and p not in (OURS, *BASELINES)]
    args.work = args.work.resolve()
    args.venvs = args.venvs.resolve()
    prepare_work_dir(args.bench.resolve(), args.work)
    patch_auth(args.work)
    check_venvs(args, peers, args.work)
    link_venv(args.venvs)
    out = (args.out or args.work / "results-openmaas").resolve()
    cmd = harness_command(args, peers, out)
    if args.prepare_only:
        print(f"BENCH_VENVS={args.venvs} BENCH_AUTH_DIR=$(mktemp -d) {' '.join(cmd)}")
        return 0
    ref_file = args.bench / "results" / "latest.md"
    if not ref_file.is_file():
        ref_file = args.work / "results" / "latest.md"
    ref_roles, ref = read_reference(ref_file)  # read before the run: --out may overwrite it
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as auth_dir:
        env = {**os.environ, "BENCH_VENVS": str(args.venvs), "BENCH_AUTH_DIR": auth_dir}
        print("running: " + " ".join(cmd), flush=True)
        status = subprocess.run(cmd, cwd=args.work, env=env, check=False).returncode
    if status != 0:
        print(f"the harness failed (exit {status})", file=sys.stderr)
        return status
    if not (out / "latest.json").is_file():
        print(f"the harness wrote no {out / 'latest.json'}", file=sys.stderr)
        return 2
    meta, points, problems = read_run(out / "latest.json")
    table = render(meta, points, peers, ref_roles, ref, ref_file)
    (out / f"{meta['run_id']}-openmaas.md").write_text(table)
    print("\n" + table)
    print(f"(full report: {out / (meta['run_id'] + '.md')})")
    errors = sum(p.errors for (name, _, _), p in points.items() if name == OURS)
    if errors:
        problems.append(f"{OURS}: {errors} failed requests (wrk errors or non-2xx answers)")
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = _parse_args(argv)
    try:
        return run(args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.returncode or 2


if __name__ == "__main__":
    sys.exit(main())

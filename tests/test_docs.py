"""The docs match the code: every setting and every error code is documented."""

from __future__ import annotations

from pathlib import Path

import openmaas
from openmaas.errors import all_error_classes
from openmaas.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, field in Settings.model_fields.items():
        assert f"`OPENMAAS_{name.upper()}`" in readme, name
        assert field.description, f"setting {name} has no description"


def test_every_error_code_is_documented() -> None:
    errors_doc = (ROOT / "docs" / "errors.md").read_text()
    for cls in all_error_classes():
        assert f"| `{cls.code}` | {cls.status} | `{cls.__name__}` |" in errors_doc, cls.code


def test_public_names() -> None:
    assert openmaas.__all__ == ["Client", "__version__"]
    for name in openmaas.__all__:
        assert hasattr(openmaas, name)


def test_changelog_names_this_version() -> None:
    assert f"## [{openmaas.__version__}]" in (ROOT / "CHANGELOG.md").read_text()

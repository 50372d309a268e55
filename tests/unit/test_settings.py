"""Settings: the OPENMAAS_ environment prefix, defaults and derived paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from openmaas.settings import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OPENMAAS_ variable of the machine running the tests leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("OPENMAAS_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = Settings()
    assert settings.data_dir == Path("openmaas-data")
    assert settings.database_url is None
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.max_queue == 256
    assert settings.metadata_cache_seconds == 2.0
    assert settings.demo_models is True
    assert settings.inference_threads >= 1


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPENMAAS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("OPENMAAS_PORT", "9123")
    monkeypatch.setenv("OPENMAAS_DEMO_MODELS", "false")
    monkeypatch.setenv("OPENMAAS_MAX_QUEUE", "3")
    monkeypatch.setenv("OPENMAAS_METADATA_CACHE_SECONDS", "0")
    settings = Settings()
    assert settings.data_dir == tmp_path
    assert settings.port == 9123
    assert settings.demo_models is False
    assert settings.max_queue == 3
    assert settings.metadata_cache_seconds == 0


def test_unprefixed_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9999")
    monkeypatch.setenv("DATA_DIR", "/elsewhere")
    settings = Settings()
    assert settings.port == 8000
    assert settings.data_dir == Path("openmaas-data")


def test_invalid_environment_value_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENMAAS_PORT", "70000")
    with pytest.raises(ValidationError):
        Settings()


def test_database_url_defaults_into_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    expected = (tmp_path / "data" / "openmaas.db").resolve()
    assert settings.resolved_database_url == f"sqlite:///{expected}"


def test_relative_data_dir_gives_an_absolute_database_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=Path("rel"))
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'rel/openmaas.db'}"


def test_explicit_database_url_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPENMAAS_DATABASE_URL", "sqlite:///elsewhere.db")
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_database_url == "sqlite:///elsewhere.db"


def test_derived_paths_live_in_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.blob_dir == tmp_path / "blobs"
    assert settings.admin_key_file == tmp_path / "admin.key"
    assert settings.secret_file == tmp_path / "server.secret"

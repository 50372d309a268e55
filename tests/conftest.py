"""Shared fixtures: a fresh data directory, the services, the in-process app and keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from openmaas.app import create_app
from openmaas.bootstrap import Services, build_services, initialize
from openmaas.security import Principal
from openmaas.settings import Settings
from tests.helpers.server import LiveServer, live_server


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on a temporary data directory, without the (slow) demo models."""
    return Settings(data_dir=tmp_path / "data", demo_models=False, inference_threads=2)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build_services(settings)
    yield built
    built.db.close()


@pytest.fixture
def admin_key(services: Services) -> str:
    """The owner key of the platform tenant ``admin``."""
    result = initialize(services)
    assert result.admin_key is not None
    return result.admin_key


@pytest.fixture
def admin(services: Services, admin_key: str) -> Principal:
    return services.accounts.authenticate(admin_key)


@pytest.fixture
def http(settings: Settings, services: Services, admin_key: str) -> Iterator[TestClient]:
    """The app in process; requests carry the admin key unless they set their own."""
    app = create_app(settings, services)
    with TestClient(app, headers={"Authorization": f"Bearer {admin_key}"}) as client:
        yield client


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real server for the session, first-started the way a user starts it (demo models)."""
    root = tmp_path_factory.mktemp("live")
    with live_server(root / "openmaas-data") as running:
        yield running

"""Database: migrations create exactly the tables of the models, and SQLite is set up safely."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError

from openmaas.store.db import MIGRATIONS_DIR, Database
from openmaas.store.tables import Base, Grant, Model, Tenant

TABLES = set(Base.metadata.tables)
MIGRATIONS = Path(__file__).parents[3] / "src/openmaas/store/migrations/versions"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'meta.db'}")
    database.migrate()
    yield database
    database.close()


def test_migrate_creates_the_tables(db: Database) -> None:
    names = set(inspect(db.engine).get_table_names())
    assert names == TABLES | {"alembic_version"}


def test_migrate_records_the_head_revision(db: Database) -> None:
    with db.engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
    newest = max(p.name.split("_")[0] for p in MIGRATIONS.glob("[0-9]*.py"))
    assert revision == newest


def test_migrate_twice_is_a_no_op(db: Database) -> None:
    with db.session() as session:
        session.add(Tenant(name="kept", is_platform=False))
        session.commit()
    db.migrate()
    with db.session() as session:
        assert session.scalars(select(Tenant.name)).all() == ["kept"]


def test_migrated_schema_matches_the_table_models(db: Database) -> None:
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


@pytest.mark.parametrize(
    ("pragma", "expected"),
    [
        ("journal_mode", "wal"),
        ("secure_delete", 1),
        ("foreign_keys", 1),
        ("synchronous", 2),  # FULL
        ("busy_timeout", 5000),
    ],
)
def test_sqlite_pragmas_are_set_on_every_connection(
    db: Database, pragma: str, expected: object
) -> None:
    with db.engine.connect() as first, db.engine.connect() as second:
        for connection in (first, second):
            assert connection.exec_driver_sql(f"PRAGMA {pragma}").scalar() == expected


def test_foreign_keys_are_enforced(db: Database) -> None:
    with db.engine.connect() as connection, pytest.raises(IntegrityError):
        connection.exec_driver_sql(
            "INSERT INTO models (tenant_id, name, visibility, description, created_at) "
            "VALUES (999, 'orphan', 'private', '', '2024-01-01 00:00:00')"
        )


def test_deleting_a_tenant_cascades(db: Database) -> None:
    with db.engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO tenants (id, name, is_platform, created_at) "
            "VALUES (1, 'gone', 0, '2024-01-01 00:00:00')"
        )
        connection.exec_driver_sql(
            "INSERT INTO models (tenant_id, name, visibility, description, created_at) "
            "VALUES (1, 'm', 'private', '', '2024-01-01 00:00:00')"
        )
        connection.exec_driver_sql("DELETE FROM tenants WHERE id = 1")
        assert connection.exec_driver_sql("SELECT count(*) FROM models").scalar() == 0


def test_datetimes_read_back_timezone_aware(db: Database) -> None:
    with db.session() as session:
        session.add(Tenant(name="tz", is_platform=False))
        session.commit()
    with db.session() as session:
        created = session.scalars(select(Tenant.created_at)).one()
    assert created.tzinfo is not None
    assert created.utcoffset() is not None
    assert created.utcoffset().total_seconds() == 0


# -- upgrading a data directory made by an older release ------------------------------------


def _migrate_to(database: Database, revision: str, *, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


def test_a_0002_database_upgrades_without_losing_rows(tmp_path: Path) -> None:
    old = Database(f"sqlite:///{tmp_path / 'old.db'}")
    _migrate_to(old, "0002")
    with old.engine.begin() as connection:
        for statement in (
            "INSERT INTO tenants (id, name, is_platform, created_at) "
            "VALUES (1, 'admin', 1, '2024-01-01 00:00:00'), (2, 'lab', 0, '2024-01-01 00:00:00')",
            "INSERT INTO models (id, tenant_id, name, visibility, description, created_at) "
            "VALUES (1, 1, 'fraud', 'private', '', '2024-01-01 00:00:00')",
            "INSERT INTO grants (model_id, grantee_tenant_id, quota_per_day, created_at) "
            "VALUES (1, 2, 10, '2024-01-01 00:00:00')",
        ):
            connection.exec_driver_sql(statement)
    old.close()

    db = Database(old.url)
    db.migrate()
    with db.session() as session:
        assert session.execute(select(Tenant.name, Tenant.weight)).all() == [
            ("admin", 1.0),
            ("lab", 1.0),
        ]
        model = session.scalars(select(Model)).one()
        assert (model.name, model.deployment) == ("fraud", None)
        grant = session.scalars(select(Grant)).one()
        assert (grant.quota_per_day, grant.weight) == (10, None)
    db.close()


def test_0003_downgrades_and_upgrades_again(db: Database) -> None:
    with db.session() as session:
        session.add(Tenant(name="kept", is_platform=False, weight=3.0))
        session.commit()
    _migrate_to(db, "0002", down=True)
    assert "weight" not in {c["name"] for c in inspect(db.engine).get_columns("tenants")}
    db.migrate()
    with db.session() as session:
        assert session.execute(select(Tenant.name, Tenant.weight)).all() == [("kept", 1.0)]

"""Audit log: append and read, verify a clean chain, and detect every kind of tampering."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import stat
import string
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, update

from openmaas.security import audit
from openmaas.security.audit import GENESIS_HASH, AuditLog, checkpoint_message
from openmaas.security.signing import Signer
from openmaas.store.db import Database
from openmaas.store.tables import AuditCheckpoint, AuditRecord, utcnow

_TOKEN = "om_abcdefghijk1_" + "S" * 43 + "abcdef"


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated database file to copy (migrating costs a quarter second)."""
    path = tmp_path_factory.mktemp("template") / "a.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    db.close()
    return path


def _open(
    directory: Path, migrated: Path, checkpoint_every: int = 100
) -> tuple[Database, AuditLog]:
    """The log in ``directory``: a copy of the migrated database, a key and a head file."""
    if not (directory / "a.db").exists():
        shutil.copyfile(migrated, directory / "a.db")
    db = Database(f"sqlite:///{directory / 'a.db'}")
    signer = Signer.load_or_create(directory / "signing.key")
    return db, AuditLog(db, signer, directory / "audit.head", checkpoint_every=checkpoint_every)


@pytest.fixture
def db_and_log(tmp_path: Path, migrated: Path) -> Iterator[tuple[Database, AuditLog]]:
    db, log = _open(tmp_path, migrated, checkpoint_every=5)
    yield db, log
    db.close()


@pytest.fixture
def log(db_and_log: tuple[Database, AuditLog]) -> AuditLog:
    return db_and_log[1]


@pytest.fixture
def db(db_and_log: tuple[Database, AuditLog]) -> Database:
    return db_and_log[0]


def _fill(log: AuditLog, count: int) -> None:
    for n in range(count):
        log.append(
            actor_tenant="acme" if n % 2 else "globex",
            actor_key_id=f"key{n:04d}",
            action="models.publish",
            target=f"acme/model-{n}",
            details={"version": n, "format": "onnx"},
        )


def _edit(db: Database, seq: int, /, **values: Any) -> None:
    with db.engine.begin() as connection:
        connection.execute(update(AuditRecord).where(AuditRecord.seq == seq).values(**values))


def _delete(db: Database, *seqs: int) -> None:
    """Delete records and their checkpoints, as someone covering their tracks would."""
    with db.engine.begin() as connection:
        connection.execute(delete(AuditRecord).where(AuditRecord.seq.in_(seqs)))
        connection.execute(delete(AuditCheckpoint).where(AuditCheckpoint.seq.in_(seqs)))


def _swap(db: Database, first: int, second: int) -> None:
    """Exchange the contents (all but seq) of two records."""
    columns = [c for c in AuditRecord.__table__.columns if c.name != "seq"]
    with db.engine.begin() as connection:
        rows = {
            row.seq: row._mapping
            for row in connection.execute(
                select(AuditRecord.__table__).where(AuditRecord.seq.in_([first, second]))
            )
        }
        for mine, theirs in ((first, second), (second, first)):
            connection.execute(
                update(AuditRecord)
                .where(AuditRecord.seq == mine)
                .values({c.name: rows[theirs][c.name] for c in columns})
            )


def _problems(log: AuditLog) -> str:
    report = log.verify()
    assert not report.ok
    assert report.problems
    return "\n".join(report.problems)


def _forged_hash(row: AuditRecord, **changes: Any) -> str:
    fields = {
        "seq": row.seq,
        "at": row.at,
        "actor_tenant": row.actor_tenant,
        "actor_key_id": row.actor_key_id,
        "action": row.action,
        "target": row.target,
        "outcome": row.outcome,
        "details": row.details,
        "prev_hash": row.prev_hash,
        **changes,
    }
    return audit._record_hash(**fields)


# -- append and read ------------------------------------------------------------------------


def test_all_lists_the_public_names() -> None:
    assert audit.__all__ == [
        "GENESIS_HASH",
        "AuditEntry",
        "AuditLog",
        "AuditReport",
        "checkpoint_message",
    ]


def test_append_returns_the_stored_record(log: AuditLog) -> None:
    entry = log.append(
        actor_tenant="acme",
        actor_key_id="abcdefghijk1",
        action="keys.create",
        target="acme/keys/ci",
        details={"role": "consumer", "scopes": ["infer"], "limits": {"rpm": 60}},
    )
    assert entry.seq == 1
    assert entry.prev_hash == GENESIS_HASH
    assert entry.outcome == "ok"
    assert len(entry.hash) == 64
    assert entry.at.tzinfo is not None
    assert log.find(1) == entry
    assert log.records() == [entry]
    assert log.find(2) is None


def test_hash_is_sha256_of_canonical_json(log: AuditLog) -> None:
    entry = log.append(
        actor_tenant="acme", actor_key_id="k", action="a", target="t", details={"b": 1, "a": 2}
    )
    body = {
        "seq": 1,
        "at": entry.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor_tenant": "acme",
        "actor_key_id": "k",
        "action": "a",
        "target": "t",
        "outcome": "ok",
        "details": {"a": 2, "b": 1},
        "prev_hash": GENESIS_HASH,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    assert entry.hash == hashlib.sha256(canonical.encode()).hexdigest()


def test_records_chain_and_page(log: AuditLog) -> None:
    _fill(log, 7)
    entries = log.records()
    assert [e.seq for e in entries] == list(range(1, 8))
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert [e.seq for e in log.records(limit=2, after_seq=3)] == [4, 5]
    assert {e.actor_tenant for e in log.records(tenant="acme")} == {"acme"}
    assert [e.seq for e in log.records(tenant="acme")] == [2, 4, 6]
    with pytest.raises(ValueError, match="limit"):
        log.records(limit=0)


def test_head_file_is_private_and_signed(log: AuditLog, tmp_path: Path) -> None:
    _fill(log, 3)
    head_file = tmp_path / "audit.head"
    assert stat.S_IMODE(head_file.stat().st_mode) == 0o600
    head = json.loads(head_file.read_text())
    assert head["seq"] == 3
    assert head["hash"] == log.records()[-1].hash
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.db",
        "a.db-shm",
        "a.db-wal",
        "audit.head",
        "audit.head.lock",
        "signing.key",
    ]


def test_checkpoints_keep_every_nth_and_the_latest(log: AuditLog, db: Database) -> None:
    _fill(log, 12)
    with db.session() as session:
        assert session.scalars(select(AuditCheckpoint.seq)).all() == [5, 10, 12]
    assert log.verify().ok


def test_checkpoints_are_kept_every_hundred_by_default(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    db.migrate()
    log = AuditLog(db, Signer.generate(), tmp_path / "audit.head")
    with db.session() as session:  # pretend 199 records came before (not a valid chain)
        for seq in range(1, 200):
            fields = {"seq": seq, "hash": "0" * 64, "at": utcnow()}
            session.add(AuditCheckpoint(signature="", **fields))
            session.add(
                AuditRecord(
                    actor_tenant="acme",
                    actor_key_id="k",
                    action="a",
                    target="t",
                    outcome="ok",
                    details={},
                    prev_hash="0" * 64,
                    **fields,
                )
            )
        session.commit()
    entry = log.append(actor_tenant="acme", actor_key_id="k", action="a", target="t")
    assert entry.seq == 200
    with db.session() as session:
        assert session.scalars(select(AuditCheckpoint.seq)).all() == [100, 200]
    db.close()


# -- verify --------------------------------------------------------------------------------


def test_verify_empty_log_is_ok(log: AuditLog) -> None:
    report = log.verify()
    assert report.ok
    assert (report.records, report.head_seq, report.problems) == (0, 0, [])


def test_verify_clean_chain_is_ok(log: AuditLog) -> None:
    _fill(log, 12)
    report = log.verify()
    assert report.problems == []
    assert report.ok
    assert (report.records, report.head_seq) == (12, 12)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("actor_tenant", "evil"),
        ("actor_key_id", "someoneelse1"),
        ("action", "models.delete"),
        ("target", "acme/other"),
        ("outcome", "denied"),
        ("details", {"version": 99, "format": "onnx"}),
        ("prev_hash", "f" * 64),
        ("hash", "e" * 64),
    ],
)
def test_edited_column_is_detected(log: AuditLog, db: Database, column: str, value: Any) -> None:
    _fill(log, 5)
    _edit(db, 3, **{column: value})
    assert "seq 3" in _problems(log)


def test_edited_time_is_detected(log: AuditLog, db: Database) -> None:
    _fill(log, 5)
    original = log.find(2)
    assert original is not None
    _edit(db, 2, at=original.at + timedelta(seconds=1))
    assert "seq 2: hash does not match" in _problems(log)


def test_edited_record_with_rehashed_chain_is_detected(log: AuditLog, db: Database) -> None:
    """Recomputing every hash after an edit still breaks the signed checkpoint and head."""
    _fill(log, 5)
    with db.session() as session:
        rows = session.scalars(select(AuditRecord).order_by(AuditRecord.seq)).all()
        prev = rows[1].hash
        for row in rows[2:]:
            outcome = "denied" if row.seq == 3 else row.outcome
            row.hash = _forged_hash(row, outcome=outcome, prev_hash=prev)
            row.outcome, row.prev_hash, prev = outcome, prev, row.hash
        session.commit()
    problems = _problems(log)
    assert "seq 5: differs from its signed checkpoint" in problems
    assert "seq 5: differs from the signed head" in problems


def test_deleted_middle_record_is_detected(log: AuditLog, db: Database) -> None:
    _fill(log, 5)
    _delete(db, 3)
    problems = _problems(log)
    assert "seq 4: records 3 before it are missing" in problems
    assert "seq 4: prev_hash does not match" in problems


def test_deleted_last_record_is_detected(log: AuditLog, db: Database) -> None:
    _fill(log, 5)
    _delete(db, 5)
    problems = _problems(log)
    assert "signed at seq 5 but the log ends at seq 4 (truncated)" in problems
    assert "seq 4: the newest record has no signed checkpoint" in problems


def test_truncation_to_a_kept_checkpoint_is_detected(log: AuditLog, db: Database) -> None:
    _fill(log, 13)
    _delete(db, 11, 12, 13)
    problems = _problems(log)
    assert "signed at seq 13 but the log ends at seq 10 (truncated)" in problems
    assert "no signed checkpoint" not in problems


def test_truncation_stays_detected_after_more_appends(log: AuditLog, db: Database) -> None:
    """The head does not move on from a log that no longer ends where it says."""
    _fill(log, 6)
    _delete(db, 5, 6)
    _fill(log, 1)
    assert "signed at seq 6 but the log ends at seq 5 (truncated)" in _problems(log)
    _fill(log, 3)
    problems = _problems(log)
    assert "seq 6: differs from the signed head" in problems
    assert "seq 8: the log goes past the signed head at seq 6" in problems


def test_deleted_head_file_stays_detected_after_more_appends(log: AuditLog, tmp_path: Path) -> None:
    _fill(log, 3)
    (tmp_path / "audit.head").unlink()
    _fill(log, 2)
    assert "head: the file" in _problems(log)


def test_head_one_behind_after_a_crash_heals_on_the_next_append(
    log: AuditLog, tmp_path: Path
) -> None:
    _fill(log, 3)
    head_file = tmp_path / "audit.head"
    before = head_file.read_text()
    _fill(log, 1)
    head_file.write_text(before)  # as if the process died between commit and head write
    assert "seq 4: the log goes past the signed head at seq 3" in _problems(log)
    _fill(log, 1)
    assert log.verify().problems == []


def test_truncation_of_everything_is_detected(log: AuditLog, db: Database) -> None:
    _fill(log, 3)
    _delete(db, 1, 2, 3)
    assert "the log ends at seq 0" in _problems(log)


def test_swapped_records_are_detected(log: AuditLog, db: Database) -> None:
    _fill(log, 5)
    _swap(db, 2, 4)
    problems = _problems(log)
    assert "seq 2: hash does not match" in problems
    assert "seq 4: hash does not match" in problems


def test_forged_appended_record_is_detected(log: AuditLog, db: Database) -> None:
    """A well-linked record with a correct hash still lacks a valid signature."""
    _fill(log, 3)
    last = log.find(3)
    assert last is not None
    with db.session() as session:
        row = AuditRecord(
            seq=4,
            at=last.at,
            actor_tenant="acme",
            actor_key_id="attacker0001",
            action="keys.create",
            target="acme/keys/backdoor",
            outcome="ok",
            details={},
            prev_hash=last.hash,
            hash="",
        )
        row.hash = _forged_hash(row)
        session.add(row)
        forger = Signer.generate()
        session.add(
            AuditCheckpoint(
                seq=4,
                hash=row.hash,
                signature=forger.sign(checkpoint_message(4, row.hash)),
                at=row.at,
            )
        )
        session.commit()
    problems = _problems(log)
    assert "checkpoint 4: signature does not verify" in problems
    assert "seq 4: the log goes past the signed head at seq 3" in problems


@pytest.mark.parametrize(
    "change",
    [
        {"seq": 2},
        {"hash": "a" * 64},
        {"signature": "b" * 128},
    ],
)
def test_edited_head_file_is_detected(
    log: AuditLog, tmp_path: Path, change: dict[str, object]
) -> None:
    _fill(log, 3)
    head_file = tmp_path / "audit.head"
    head = json.loads(head_file.read_text())
    head_file.write_text(json.dumps({**head, **change}))
    assert "head: signature over seq" in _problems(log)


def test_head_signed_with_another_key_is_detected(log: AuditLog, tmp_path: Path) -> None:
    _fill(log, 3)
    last = log.records()[-1]
    forger = Signer.generate()
    signature = forger.sign(checkpoint_message(3, last.hash))
    (tmp_path / "audit.head").write_text(
        json.dumps({"seq": 3, "hash": last.hash, "signature": signature})
    )
    assert "head: signature over seq 3 does not verify" in _problems(log)


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"seq": "3"}'])
def test_damaged_head_file_is_reported(log: AuditLog, tmp_path: Path, text: str) -> None:
    _fill(log, 2)
    (tmp_path / "audit.head").write_text(text)
    assert "head: " in _problems(log)


def test_missing_head_file_is_reported(log: AuditLog, tmp_path: Path) -> None:
    _fill(log, 2)
    (tmp_path / "audit.head").unlink()
    assert "head: the file" in _problems(log)


def test_verify_with_another_signer_fails(db: Database, log: AuditLog, tmp_path: Path) -> None:
    _fill(log, 2)
    impostor = AuditLog(db, Signer.generate(), tmp_path / "audit.head")
    assert "checkpoint 2: signature does not verify" in _problems(impostor)


# -- what may be logged --------------------------------------------------------------------


@pytest.mark.parametrize(
    "details",
    [
        {"note": f"created {_TOKEN}"},
        {"header": f"Bearer {_TOKEN}"},
        {"note": f"key={_TOKEN[:16]}"},
        {"secret": "x"},
        {"client_secret": "x"},
        {"apiKey": "x"},
        {"api-key": "x"},
        {"access_token": "x"},
        {"Password": "x"},
        {"request": {"headers": {"authorization": "x"}}},
        {"limits": {"token": "x"}},
        {"keys": [_TOKEN]},
        {"payload": "x" * 5000},
        {"rows": list(range(60))},
        {"nested": [[1, 2]]},
        {"deep": {"er": {"x": 1}}},
        {"blob": b"bytes"},
        {"ratio": float("nan")},
        {1: "not a str key"},
    ],
)
def test_payloads_and_secrets_are_refused(log: AuditLog, details: dict[Any, Any]) -> None:
    with pytest.raises(ValueError, match="audit"):
        log.append(actor_tenant="acme", actor_key_id="k", action="a", target="t", details=details)
    assert log.records() == []


@pytest.mark.parametrize("field", ["target", "action", "actor_key_id"])
def test_api_key_in_a_field_is_refused(log: AuditLog, field: str) -> None:
    values: dict[str, Any] = {
        "actor_tenant": "acme",
        "actor_key_id": "k",
        "action": "a",
        "target": "t",
    }
    with pytest.raises(ValueError, match="API key"):
        log.append(**{**values, field: _TOKEN[:20]})


def test_too_long_field_is_refused(log: AuditLog) -> None:
    with pytest.raises(ValueError, match="at most 200"):
        log.append(actor_tenant="acme", actor_key_id="k", action="a", target="t" * 201)


def test_ordinary_details_are_kept(log: AuditLog) -> None:
    details = {
        "max_tokens": 256,
        "tokenizer": "bpe",
        "key_id": "abcdefghijk1",
        "ratio": 0.25,
        "ok": True,
        "none": None,
        "scopes": ["infer", "models:read"],
        "limits": {"rpm": 60},
        "step": "custom_preprocessor_v2",
        "signature": "ab" * 64,
        "destroyed_keys": ["0123456789abcdef"],
    }
    entry = log.append(
        actor_tenant="acme", actor_key_id="k", action="a", target="t", details=details
    )
    assert entry.details == details
    assert log.find(1) == entry


# -- concurrency ---------------------------------------------------------------------------


def test_concurrent_appends_form_one_chain(log: AuditLog) -> None:
    def work(thread: int) -> None:
        for n in range(20):
            log.append(
                actor_tenant="acme",
                actor_key_id=f"thread{thread}",
                action="infer",
                target=f"acme/m/{n}",
            )

    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(work, t) for t in range(8)]:
            future.result()
    assert [e.seq for e in log.records(limit=1000)] == list(range(1, 161))
    report = log.verify()
    assert report.problems == []
    assert (report.records, report.head_seq) == (160, 160)


def test_two_logs_on_the_same_files_stay_one_chain(tmp_path: Path, migrated: Path) -> None:
    """Like two server workers: separate engines and locks, one database and head file."""
    db_one, one = _open(tmp_path, migrated)
    db_two, two = _open(tmp_path, migrated)
    try:

        def work(log: AuditLog) -> None:
            for n in range(15):
                log.append(actor_tenant="acme", actor_key_id="k", action="a", target=f"t{n}")

        with ThreadPoolExecutor(max_workers=4) as pool:
            for future in [pool.submit(work, log) for log in (one, two, one, two)]:
                future.result()
        report = two.verify()
        assert report.problems == []
        assert (report.records, report.head_seq) == (60, 60)
    finally:
        db_one.close()
        db_two.close()


# -- any tampering is found ----------------------------------------------------------------

_TEXT = st.text(alphabet=string.ascii_letters + string.digits + "/:-. ", max_size=12)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=False, allow_infinity=False),
    _TEXT,
)
_RECORDS = st.fixed_dictionaries(
    {
        "actor_tenant": st.sampled_from(["acme", "globex", "admin"]),
        "actor_key_id": st.sampled_from(["abcdefghijk1", "zyxwvutsrqp2"]),
        "action": st.sampled_from(["infer", "models.publish", "keys.revoke"]),
        "target": _TEXT,
        "outcome": st.sampled_from(["ok", "denied", "error"]),
        "details": st.dictionaries(st.sampled_from(["n", "model", "ratio", "ok"]), _SCALARS),
    }
)
_COLUMNS = [
    "seq",
    "at",
    "actor_tenant",
    "actor_key_id",
    "action",
    "target",
    "outcome",
    "details",
    "prev_hash",
    "hash",
]


def _tampered(row: AuditRecord, column: str) -> object:
    """A value for ``column`` that differs from the row's."""
    value = getattr(row, column)
    if column == "seq":
        return value + 1000
    if column == "at":
        return value + timedelta(microseconds=1)
    if column == "details":
        return {**value, "tampered": True}
    if column in ("prev_hash", "hash"):
        return "f" * 64 if value != "f" * 64 else "e" * 64
    return value + "x"


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.generate()


@settings(max_examples=40, deadline=None)
@given(records=st.lists(_RECORDS, min_size=1, max_size=30), data=st.data())
def test_any_tampering_is_detected(
    migrated: Path, signer: Signer, records: list[dict[str, Any]], data: st.DataObject
) -> None:
    count = len(records)
    kinds = ["edit", "delete", "truncate"] + (["swap"] if count >= 2 else [])
    kind = data.draw(st.sampled_from(kinds), label="kind")
    with tempfile.TemporaryDirectory() as temp:
        shutil.copyfile(migrated, Path(temp) / "a.db")
        db = Database(f"sqlite:///{Path(temp) / 'a.db'}")
        log = AuditLog(db, signer, Path(temp) / "audit.head", checkpoint_every=7)
        try:
            for record in records:
                log.append(**record)
            assert log.verify().ok
            if kind == "edit":
                seq = data.draw(st.integers(1, count), label="seq")
                column = data.draw(st.sampled_from(_COLUMNS), label="column")
                with db.session() as session:
                    row = session.get(AuditRecord, seq)
                    assert row is not None
                    value = _tampered(row, column)
                _edit(db, seq, **{column: value})
            elif kind == "delete":
                _delete(db, data.draw(st.integers(1, count), label="seq"))
            elif kind == "truncate":
                k = data.draw(st.integers(1, count), label="k")
                _delete(db, *range(count - k + 1, count + 1))
            else:
                first, second = data.draw(
                    st.lists(st.integers(1, count), min_size=2, max_size=2, unique=True),
                    label="seqs",
                )
                _swap(db, first, second)
            assert not log.verify().ok
        finally:
            db.close()

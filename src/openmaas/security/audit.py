"""Tamper-evident audit log: a hash chain of records, signed checkpoints and a signed head.

Each record's ``hash`` is the sha256 of the canonical JSON of its other fields, which include
``prev_hash``, the hash of the record before it (64 zeros for seq 1). Every append also signs
``checkpoint_message(seq, hash)`` with the server's Ed25519 key: the signature is kept as a
checkpoint row (the latest, and every 100th) and in the head file outside the database.
``verify`` then finds an edited, deleted, reordered or forged record and a truncated tail.

Appends are serialised by a thread lock and, across processes (several server workers), by
``flock`` on ``<head_file>.lock``, so the chain never forks and the head never goes back.

What it cannot find on its own: someone holding both the database and the head file who rolls
both back to an older, consistently signed state. Copy the head off the machine to catch that.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from openmaas.security._audit_guard import canonical_json, check_fields, clean_details
from openmaas.security.signing import Signer, verify_signature
from openmaas.store.db import Database
from openmaas.store.tables import AuditCheckpoint, AuditRecord, utcnow

__all__ = ["GENESIS_HASH", "AuditEntry", "AuditLog", "AuditReport", "checkpoint_message"]

GENESIS_HASH = "0" * 64
_log = logging.getLogger("openmaas.audit")
# The signing key also signs other things (receipts): prefix what it signs for the log.
_SIGNATURE_DOMAIN = "openmaas-audit-v1 "
_CHECKPOINT_EVERY = 100
_APPEND_ATTEMPTS = 5


@dataclass(frozen=True)
class AuditEntry:
    """One audit record, as stored."""

    seq: int
    at: datetime
    actor_tenant: str
    actor_key_id: str
    action: str
    target: str
    outcome: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class AuditReport:
    """What ``AuditLog.verify`` found: ``ok`` only when ``problems`` is empty."""

    ok: bool
    records: int
    head_seq: int
    problems: list[str]


@dataclass(frozen=True)
class _Draft:
    """The caller's fields of a record, checked, before it has a place in the chain."""

    actor_tenant: str
    actor_key_id: str
    action: str
    target: str
    outcome: str
    details: dict[str, Any]


@dataclass(frozen=True)
class _Head:
    seq: int
    hash: str
    signature: str


def _format_at(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record_hash(
    *,
    seq: int,
    at: datetime,
    actor_tenant: str,
    actor_key_id: str,
    action: str,
    target: str,
    outcome: str,
    details: Mapping[str, Any],
    prev_hash: str,
) -> str:
    """The sha256 hex of the canonical JSON of a record's fields other than its hash."""
    body = {
        "seq": seq,
        "at": _format_at(at),
        "actor_tenant": actor_tenant,
        "actor_key_id": actor_key_id,
        "action": action,
        "target": target,
        "outcome": outcome,
        "details": details,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def _row_hash(row: AuditRecord) -> str | None:
    """The hash ``row`` should have, or None when its contents cannot be hashed at all."""
    try:
        entry = _entry(row)
        return _record_hash(**{k: v for k, v in vars(entry).items() if k != "hash"})
    except (TypeError, ValueError, AttributeError):
        return None


def checkpoint_message(seq: int, hash_: str) -> bytes:
    """The bytes signed for the chain head at ``seq`` (domain-separated from other uses)."""
    return f"{_SIGNATURE_DOMAIN}{seq}:{hash_}".encode()


def _entry(row: AuditRecord) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        at=row.at,
        actor_tenant=row.actor_tenant,
        actor_key_id=row.actor_key_id,
        action=row.action,
        target=row.target,
        outcome=row.outcome,
        details=dict(row.details),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


# -- the head file --------------------------------------------------------------------------


def _read_head(path: Path) -> _Head | None:
    """The head in ``path``; None if there is no file; ValueError if it is unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the audit head file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"the audit head file {path} is not a JSON object")
    seq, hash_, signature = data.get("seq"), data.get("hash"), data.get("signature")
    if (
        not isinstance(seq, int)
        or isinstance(seq, bool)
        or not isinstance(hash_, str)
        or not isinstance(signature, str)
    ):
        raise ValueError(f"the audit head file {path} lacks seq, hash or signature")
    return _Head(seq=seq, hash=hash_, signature=signature)


def _write_head(path: Path, head: _Head) -> None:
    """Replace ``path`` atomically with ``head`` (temp file, fsync, rename, fsync dir)."""
    text = canonical_json({"seq": head.seq, "hash": head.hash, "signature": head.signature})
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# -- the log --------------------------------------------------------------------------------


class AuditLog:
    """Append, read and verify the audit log in ``db``, its head kept in ``head_file``."""

    def __init__(
        self,
        db: Database,
        signer: Signer,
        head_file: Path,
        *,
        checkpoint_every: int = _CHECKPOINT_EVERY,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be at least 1, not {checkpoint_every}")
        self._db = db
        self._signer = signer
        self._head_file = head_file
        self._checkpoint_every = checkpoint_every
        head_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._lock_file = head_file.with_name(head_file.name + ".lock")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the log against other threads and other processes."""
        with self._lock:
            fd = os.open(self._lock_file, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def append(
        self,
        *,
        actor_tenant: str,
        actor_key_id: str,
        action: str,
        target: str,
        outcome: str = "ok",
        details: Mapping[str, object] | None = None,
    ) -> AuditEntry:
        """Add one record at the end of the chain and sign the new head.

        Raises ValueError if a field is too long or ``details`` hold a payload or a secret:
        that is a bug in the caller, not bad client input.
        """
        check_fields(
            {
                "actor_tenant": actor_tenant,
                "actor_key_id": actor_key_id,
                "action": action,
                "target": target,
                "outcome": outcome,
            }
        )
        draft = _Draft(
            actor_tenant=actor_tenant,
            actor_key_id=actor_key_id,
            action=action,
            target=target,
            outcome=outcome,
            details=clean_details(details),
        )
        with self._locked():
            for attempt in range(_APPEND_ATTEMPTS):
                try:
                    entry, extends_head = self._insert(draft)
                except IntegrityError:
                    # Another process appended the same seq first: read the new end, retry.
                    if attempt == _APPEND_ATTEMPTS - 1:
                        raise
                    continue
                if extends_head:
                    signature = self._signer.sign(checkpoint_message(entry.seq, entry.hash))
                    _write_head(
                        self._head_file, _Head(seq=entry.seq, hash=entry.hash, signature=signature)
                    )
                else:
                    _log.warning(
                        "the audit log does not end where its signed head %s says: the head "
                        "stays there, as evidence, until someone runs verify and investigates",
                        self._head_file,
                    )
                return entry
        raise AssertionError("unreachable")  # pragma: no cover

    def _insert(self, draft: _Draft) -> tuple[AuditEntry, bool]:
        """Add the record and its checkpoint; also say whether the head may move to it."""
        with self._db.session() as session:
            row = session.execute(
                select(AuditRecord.seq, AuditRecord.hash).order_by(AuditRecord.seq.desc()).limit(1)
            ).first()
            last = None if row is None else (row.seq, row.hash)
            extends_head = self._ends_at_head(session, last)
            seq = 1 if last is None else last[0] + 1
            prev_hash = GENESIS_HASH if last is None else last[1]
            at = utcnow()
            hash_ = _record_hash(
                seq=seq,
                at=at,
                actor_tenant=draft.actor_tenant,
                actor_key_id=draft.actor_key_id,
                action=draft.action,
                target=draft.target,
                outcome=draft.outcome,
                details=draft.details,
                prev_hash=prev_hash,
            )
            record = AuditRecord(
                seq=seq,
                at=at,
                actor_tenant=draft.actor_tenant,
                actor_key_id=draft.actor_key_id,
                action=draft.action,
                target=draft.target,
                outcome=draft.outcome,
                details=dict(draft.details),
                prev_hash=prev_hash,
                hash=hash_,
            )
            entry = _entry(record)
            session.add(record)
            session.flush()  # the seq primary key fails here if another writer took it
            session.add(
                AuditCheckpoint(
                    seq=seq,
                    hash=hash_,
                    signature=self._signer.sign(checkpoint_message(seq, hash_)),
                    at=at,
                )
            )
            session.execute(
                delete(AuditCheckpoint).where(
                    AuditCheckpoint.seq < seq, AuditCheckpoint.seq % self._checkpoint_every != 0
                )
            )
            session.commit()
        return entry, extends_head

    def _signed(self, seq: int, hash_: str, signature: str) -> bool:
        return verify_signature(
            self._signer.public_key_hex, checkpoint_message(seq, hash_), signature
        )

    def _ends_at_head(self, session: Session, last: tuple[int, str] | None) -> bool:
        """Whether the log ends where the signed head says, so the head may move on.

        If not (a truncated tail, a forged record, a damaged head), moving the head would
        erase the evidence, so it stays. One record past the head is the exception when that
        record has a valid checkpoint: a crash between its commit and the head write.
        """
        try:
            head = _read_head(self._head_file)
        except ValueError:
            return False
        if head is None or last is None:
            return head is None and last is None
        if not self._signed(head.seq, head.hash, head.signature):
            return False
        if (head.seq, head.hash) == last:
            return True
        if head.seq != last[0] - 1:
            return False
        before = session.scalar(select(AuditRecord.hash).where(AuditRecord.seq == head.seq))
        checkpoint = session.get(AuditCheckpoint, last[0])
        return (
            before == head.hash
            and checkpoint is not None
            and checkpoint.hash == last[1]
            and self._signed(checkpoint.seq, checkpoint.hash, checkpoint.signature)
        )

    def records(
        self,
        limit: int = 100,
        after_seq: int = 0,
        tenant: str | None = None,
        since: datetime | None = None,
    ) -> list[AuditEntry]:
        """Up to ``limit`` records after ``after_seq``, oldest first, optionally of one tenant
        and no older than ``since`` (a tenant's creation: its erased namesake's are not its)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        query = select(AuditRecord).where(AuditRecord.seq > after_seq)
        if tenant is not None:
            query = query.where(AuditRecord.actor_tenant == tenant)
        if since is not None:
            query = query.where(AuditRecord.at >= since)
        with self._db.session() as session:
            rows = session.scalars(query.order_by(AuditRecord.seq).limit(limit)).all()
            return [_entry(row) for row in rows]

    def find(self, seq: int) -> AuditEntry | None:
        """The record at ``seq``, or None."""
        with self._db.session() as session:
            row = session.get(AuditRecord, seq)
            return None if row is None else _entry(row)

    def verify(self) -> AuditReport:
        """Check every hash, the linkage, every checkpoint and the head; list each problem."""
        with self._locked():
            return self._verify()

    def _verify(self) -> AuditReport:
        problems: list[str] = []
        head: _Head | None = None
        head_unreadable = False
        try:
            head = _read_head(self._head_file)
        except ValueError as exc:
            problems.append(f"head: {exc}")
            head_unreadable = True
        with self._db.session() as session:
            checkpoints = {cp.seq: cp for cp in session.scalars(select(AuditCheckpoint)).all()}
            for seq, cp in sorted(checkpoints.items()):
                if not self._signed(seq, cp.hash, cp.signature):
                    problems.append(f"checkpoint {seq}: signature does not verify (forged)")
            walk = _walk_chain(session, checkpoints, 0 if head is None else head.seq, problems)
        if walk.last_seq and walk.last_seq not in checkpoints:
            problems.append(f"seq {walk.last_seq}: the newest record has no signed checkpoint")
        if head is not None:
            self._check_head(head, walk, problems)
        elif walk.last_seq and not head_unreadable:
            problems.append(f"head: the file {self._head_file} is missing")
        return AuditReport(
            ok=not problems,
            records=walk.count,
            head_seq=0 if head is None else head.seq,
            problems=problems,
        )

    def _check_head(self, head: _Head, walk: _Walk, problems: list[str]) -> None:
        """Compare the signed head with the records the walk found."""
        if not self._signed(head.seq, head.hash, head.signature):
            problems.append(f"head: signature over seq {head.seq} does not verify (edited)")
        if head.seq > walk.last_seq:
            problems.append(
                f"head: signed at seq {head.seq} but the log ends at seq {walk.last_seq} "
                "(truncated)"
            )
            return
        if head.seq and walk.hash_at_head != head.hash:
            problems.append(f"seq {head.seq}: differs from the signed head (edited or replaced)")
        if head.seq < walk.last_seq:
            problems.append(
                f"seq {walk.last_seq}: the log goes past the signed head at seq {head.seq} "
                "(records appended without the signing key, an older head file, "
                "or a crash between a commit and its head write)"
            )


@dataclass
class _Walk:
    """What a walk over the records found besides problems."""

    count: int = 0
    last_seq: int = 0
    hash_at_head: str | None = None
    checkpointed: set[int] = field(default_factory=set)


def _walk_chain(
    session: Session,
    checkpoints: Mapping[int, AuditCheckpoint],
    head_seq: int,
    problems: list[str],
) -> _Walk:
    """Check each record's hash, seq and link, and its checkpoint if it has one."""
    walk = _Walk()
    expected_seq, prev_hash = 1, GENESIS_HASH
    query = select(AuditRecord).order_by(AuditRecord.seq).execution_options(yield_per=500)
    try:
        for row in session.scalars(query):
            seq = row.seq
            if seq > expected_seq:
                gap = str(expected_seq) if seq - 1 == expected_seq else f"{expected_seq}..{seq - 1}"
                problems.append(f"seq {seq}: records {gap} before it are missing (deleted)")
            elif seq < expected_seq:
                problems.append(f"seq {seq}: not a valid position (the chain starts at 1)")
            if _row_hash(row) != row.hash:
                problems.append(f"seq {seq}: hash does not match the record (edited)")
            if row.prev_hash != prev_hash:
                problems.append(
                    f"seq {seq}: prev_hash does not match the previous record's hash "
                    "(a record before it was edited, deleted or reordered)"
                )
            checkpoint = checkpoints.get(seq)
            if checkpoint is not None:
                walk.checkpointed.add(seq)
                if checkpoint.hash != row.hash:
                    problems.append(f"seq {seq}: differs from its signed checkpoint (edited)")
            if seq == head_seq:
                walk.hash_at_head = row.hash
            walk.count += 1
            walk.last_seq, expected_seq, prev_hash = seq, seq + 1, row.hash
    except (ValueError, TypeError) as exc:
        # A column edited into something the database types cannot even read back.
        problems.append(
            f"seq {walk.last_seq + 1}: records after seq {walk.last_seq} are unreadable ({exc})"
        )
    for seq in sorted(checkpoints.keys() - walk.checkpointed):
        problems.append(f"checkpoint {seq}: its record is missing (deleted or truncated)")
    return walk

"""Persistence: SQLAlchemy tables, migrations, and the blob store. Knows no HTTP."""

from __future__ import annotations

from openmaas.store.blobs import BlobStore, LocalBlobStore
from openmaas.store.db import Database

__all__ = ["BlobStore", "Database", "LocalBlobStore"]

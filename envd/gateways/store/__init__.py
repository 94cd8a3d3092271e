"""The daemon's state: one SQLite database (WAL) under $ENVD_HOME.

All access goes through Store, which serialises writers with one lock; SQLite in WAL mode lets
readers proceed. Rows are returned as small frozen dataclasses, never as sqlite3.Row.

    schema     the tables: the first release's, and each later version as one migration
    rows       the row dataclasses, and how a SELECT's tuple becomes one
    database   the file, its connection, migration, transactions, failures said in words
    projects, images, runs   the queries, one module per group of tables
"""

from __future__ import annotations

from envd.gateways.store.database import Database, is_state_failure, state_error
from envd.gateways.store.images import ImagesMixin
from envd.gateways.store.projects import ProjectsMixin
from envd.gateways.store.rows import (
    INTERRUPTED_BUILD,
    MAX_RUN_ID,
    ImageRow,
    ProjectRow,
    RunDetailsRow,
    RunRow,
)
from envd.gateways.store.runs import RunsMixin
from envd.gateways.store.schema import SCHEMA_VERSION


class Store(ProjectsMixin, ImagesMixin, RunsMixin, Database):
    """envd's database: every query, over one connection."""


__all__ = [
    "INTERRUPTED_BUILD",
    "MAX_RUN_ID",
    "SCHEMA_VERSION",
    "ImageRow",
    "ProjectRow",
    "RunDetailsRow",
    "RunRow",
    "Store",
    "is_state_failure",
    "state_error",
]

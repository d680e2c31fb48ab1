"""The usage ledger: one row per call that reached a provider, written off the call path in
batches to an embedded SQLite database (or a PostgreSQL database several replicas share), with
daily rollups that usage questions are answered
from. Plain Python: no grpc, no HTTP, nothing else of hapaxd (the gateway builds the rows).

    rows.py          LedgerRow, one call; its JSON line for the spool; UsageRow, one group's
                     totals
    sqlite_store.py  SqliteStore: the `calls` and `rollups` tables in a WAL SQLite file;
                     write (exactly once per request id), prune (raw rows past retention),
                     usage (totals from the rollups)
    postgres_store.py  PostgresStore: the same tables and answers in PostgreSQL (psycopg 3),
                     exactly once across replicas writing at the same time
    paths.py         where the SQLite file and the spool live by default
    writer.py        Ledger: record() from the call path, a background flusher writing batches
                     from a worker thread, the spool file for what the store cannot take yet;
                     Store, the protocol a store meets
"""

from hapaxd.ledger.rows import LedgerRow, UsageRow
from hapaxd.ledger.sqlite_store import SqliteStore
from hapaxd.ledger.writer import Ledger, Store

__all__ = ["Ledger", "LedgerRow", "SqliteStore", "Store", "UsageRow"]

"""SQLite for the Glance 33 peer without "database is locked" under concurrency.

Glance's task threads (location_import, the hash computation after it) and the
API threads write the same sqlite file. With pysqlite's deferred
transactions, two transactions that both read and then write deadlock, and
SQLite answers one of them SQLITE_BUSY at once, whatever the busy timeout:
the location task then fails with "database is locked" and the image stays
queued (seen here with two location POSTs a few ms apart). SQLAlchemy's own
recipe for pysqlite fixes it: let SQLAlchemy emit the BEGIN, and make it
BEGIN IMMEDIATE, so a writer waits for the lock (up to the busy timeout)
instead of deadlocking. A production Glance uses MySQL or PostgreSQL and
needs none of this.

Loaded by the gunicorn config that tools/peers/glance-peer writes.
"""

BUSY_TIMEOUT_MS = 60000


def install():
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    # oslo.db already applies the recipe with a plain (deferred) BEGIN and an
    # "in_transaction" marker; this runs first and takes the marker, so oslo.db
    # emits nothing and clears the marker at commit/rollback as usual
    @event.listens_for(Engine, "connect")
    def _connect(dbapi_connection, connection_record):
        if type(dbapi_connection).__module__.startswith("sqlite3"):
            dbapi_connection.isolation_level = None  # pysqlite must not emit BEGIN itself
            dbapi_connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    @event.listens_for(Engine, "begin")
    def _begin(conn):
        if conn.dialect.name == "sqlite" and "in_transaction" not in conn.info:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            conn.info["in_transaction"] = True

    @event.listens_for(Engine, "commit")
    @event.listens_for(Engine, "rollback")
    def _end(conn):
        conn.info.pop("in_transaction", None)

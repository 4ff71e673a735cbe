"""SQLAlchemy (Flask-Session's ``sqlalchemy`` backend): PostgreSQL, MariaDB/MySQL, SQLite.

The extension's keys live in a table of its own beside Flask-Session's, named after it
(``sessions`` -> ``sessions_plurality``) and created the same way (``CREATE TABLE`` if
missing, at ``init_app``). Rows carry their expiry; readers ignore expired rows and the
sweep deletes them (Flask-Session's expired sessions too). Atomic by the database's own
statements, each in a short transaction of its own, apart from the app's:
``INSERT ... ON CONFLICT DO NOTHING`` / ``INSERT IGNORE`` for markers and new counters,
``UPDATE ... SET count = count + 1`` for counters, an ``UPDATE ... WHERE`` for writing a
session only while it exists. The revocation epoch is read in the same ``SELECT`` as the
session: no round trip of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from .base import PlainRarelyWritten, bounded, dumps, loads, store_errors_as_unavailable, unavailable_error

#: Attempts of a statement the database aborted as a deadlock or serialization failure.
_ATTEMPTS = 3


def _utcnow() -> datetime:
    """Flask-Session's clock: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


class SQLStore(PlainRarelyWritten):
    """The extension's keys in ``<sessions table>_plurality``; Flask-Session's rows too."""

    shared = True

    def __init__(
        self,
        engine: sa.engine.Engine,
        sessions: sa.Table,
        decode: Callable[[bytes], Any],
        encode: Callable[[Any], bytes],
    ) -> None:
        self.engine = engine
        self.sessions = sessions
        self._decode, self._encode = decode, encode
        self.table = sa.Table(
            f"{sessions.name}_plurality",
            sa.MetaData(schema=sessions.schema),
            sa.Column("key", sa.String(255), primary_key=True),
            sa.Column("value", sa.Text, nullable=True),
            sa.Column("count", sa.BigInteger, nullable=False, default=0),
            sa.Column("expires_at", sa.Double, nullable=False, index=True),
        )
        self.dialect = engine.dialect.name
        with store_errors_as_unavailable():
            try:
                self.table.create(bind=engine, checkfirst=True)
            except (OperationalError, IntegrityError, DBAPIError):
                # Another worker created it between the check and the CREATE.
                if not sa.inspect(engine).has_table(self.table.name, schema=sessions.schema):
                    raise

    # -- statements ---------------------------------------------------------------

    def _run(self, work: Callable[[sa.Connection], Any]) -> Any:
        """``work`` in a transaction of its own; store failures become a 503."""
        with store_errors_as_unavailable():
            for attempt in range(_ATTEMPTS):
                try:
                    with self.engine.begin() as conn:
                        return work(conn)
                except OperationalError as exc:  # deadlock / serialization: try again
                    if attempt == _ATTEMPTS - 1 or not _retryable(exc):
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _insert(self, table: sa.Table, row: dict[str, Any], *, update: dict[str, Any] | None = None) -> Any:
        """INSERT that ignores a duplicate key (``update=None``) or updates it."""
        if self.dialect in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import insert as my_insert

            if update is None:
                return sa.insert(table).values(**row).prefix_with("IGNORE")
            return my_insert(table).values(**row).on_duplicate_key_update(**update)
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        else:
            raise unavailable_error(f"no atomic insert for the {self.dialect} dialect")
        # PostgreSQL's and SQLite's ON CONFLICT read the same.
        index = [next(iter(_unique_columns(table)))]
        stmt = insert(table).values(**row)
        if update is None:
            return stmt.on_conflict_do_nothing(index_elements=index).returning(table.c[index[0]])
        return stmt.on_conflict_do_update(index_elements=index, set_=update)

    def _inserted(self, stmt: Any, conn: sa.Connection) -> bool:
        """Did this insert-unless-present insert? (PostgreSQL and SQLite report no rowcount
        for it: they return the key of an inserted row instead.)"""
        result = conn.execute(stmt)
        if self.dialect in ("postgresql", "sqlite"):
            return result.first() is not None
        return int(result.rowcount) == 1

    # -- the extension's keys -------------------------------------------------------

    def get(self, key: str) -> Any:
        t = self.table
        query = sa.select(t.c.value).where(t.c.key == key, t.c.expires_at > time.time())
        return loads(self._run(lambda conn: conn.execute(query).scalar()))

    def set(self, key: str, value: Any, ttl: float) -> None:
        row = {"key": key, "value": dumps(value), "count": 0, "expires_at": time.time() + bounded(ttl)}
        stmt = self._insert(self.table, row, update={k: v for k, v in row.items() if k != "key"})
        self._run(lambda conn: conn.execute(stmt))

    def delete(self, key: str) -> None:
        t = self.table
        self._run(lambda conn: conn.execute(sa.delete(t).where(t.c.key == key)))

    def _drop_expired(self, key: str, now: float) -> None:
        t = self.table
        self._run(lambda conn: conn.execute(sa.delete(t).where(t.c.key == key, t.c.expires_at <= now)))

    def add(self, key: str, value: Any, ttl: float) -> bool:
        now = time.time()
        self._drop_expired(key, now)
        row = {"key": key, "value": dumps(value), "count": 0, "expires_at": now + bounded(ttl)}
        stmt = self._insert(self.table, row)
        return bool(self._run(partial(self._inserted, stmt)))

    def incr(self, key: str, ttl: float) -> tuple[int, int]:
        t = self.table
        for _ in range(5):
            now = time.time()

            def bump(conn: sa.Connection, now: float = now) -> tuple[int, float] | None:
                done = conn.execute(
                    sa.update(t).where(t.c.key == key, t.c.expires_at > now).values(count=t.c.count + 1)
                )
                if done.rowcount != 1:
                    return None
                row = conn.execute(sa.select(t.c.count, t.c.expires_at).where(t.c.key == key)).one()
                return int(row[0]), float(row[1])

            counted = self._run(bump)
            if counted is not None:  # seconds left as of now (this worker may have waited on a lock)
                return counted[0], max(1, min(bounded(ttl), int(counted[1] - time.time() + 0.999)))
            self._drop_expired(key, now)
            window = bounded(ttl)
            stmt = self._insert(t, {"key": key, "value": None, "count": 1, "expires_at": now + window})
            if self._run(partial(self._inserted, stmt)):
                return 1, window
        raise unavailable_error("a counter kept changing under this worker")

    def decr(self, key: str) -> None:
        t = self.table
        stmt = sa.update(t).where(t.c.key == key, t.c.count > 0).values(count=t.c.count - 1)
        self._run(lambda conn: conn.execute(stmt))
        # Each statement is atomic: a count another worker raised meanwhile is not 0.
        self._run(lambda conn: conn.execute(sa.delete(t).where(t.c.key == key, t.c.count <= 0)))

    def peek(self, key: str) -> tuple[int, int]:
        t, now = self.table, time.time()
        query = sa.select(t.c.count, t.c.expires_at).where(t.c.key == key, t.c.expires_at > now)
        row = self._run(lambda conn: conn.execute(query).first())
        if row is None:
            return 0, 0
        return int(row[0]), max(1, int(float(row[1]) - now + 0.999))

    # -- Flask-Session's entries ----------------------------------------------------

    def retrieve_session(self, store_id: str, epoch_key: str | None) -> tuple[Any, Any]:
        """(session data or ``None``, the epoch's value) in one ``SELECT``."""
        s, t = self.sessions, self.table
        columns: list[Any] = [s.c.data, s.c.expiry]
        if epoch_key is not None:
            epoch = sa.select(t.c.value).where(t.c.key == epoch_key, t.c.expires_at > time.time())
            columns.append(epoch.scalar_subquery())
        row = self._run(lambda conn: conn.execute(sa.select(*columns).where(s.c.session_id == store_id)).first())
        if row is None or row[1] is None or row[1] <= _utcnow():
            return None, None  # an expired row is the sweep's to delete
        return self._decode(bytes(row[0])), (loads(row[2]) if epoch_key is not None else None)

    def save_session(self, store_id: str, session: Any, ttl: int, *, only_if_present: bool) -> None:
        s, data = self.sessions, self._encode(session)
        expiry = _utcnow() + timedelta(seconds=max(1, ttl))
        if only_if_present:  # an UPDATE finds nothing once a logout deleted the row
            stmt: Any = (
                sa.update(s).where(s.c.session_id == store_id, s.c.expiry > _utcnow()).values(data=data, expiry=expiry)
            )
        else:
            stmt = self._insert(
                s, {"session_id": store_id, "data": data, "expiry": expiry}, update={"data": data, "expiry": expiry}
            )
        self._run(lambda conn: conn.execute(stmt))

    def delete_session(self, store_id: str) -> None:
        s = self.sessions
        self._run(lambda conn: conn.execute(sa.delete(s).where(s.c.session_id == store_id)))

    def sweep(self) -> None:
        """Delete expired rows: the extension's and Flask-Session's."""
        t, s = self.table, self.sessions
        self._run(lambda conn: conn.execute(sa.delete(t).where(t.c.expires_at <= time.time())))
        self._run(lambda conn: conn.execute(sa.delete(s).where(s.c.expiry <= _utcnow())))


def _unique_columns(table: sa.Table) -> list[str]:
    """The column an upsert conflicts on: the primary key, or Flask-Session's unique id."""
    if "session_id" in table.c:
        return ["session_id"]
    return [c.name for c in table.primary_key.columns]


def _retryable(exc: OperationalError) -> bool:
    text = str(getattr(exc, "orig", exc)).lower()
    return "deadlock" in text or "serializ" in text or "lock wait" in text


def sql_store_for(
    inner: Any, app: Any, encode: Callable[[Any], bytes], decode: Callable[[bytes], Any]
) -> SQLStore | None:
    """The SQLStore behind Flask-Session's sqlalchemy interface (needs the app for the engine)."""
    model = getattr(inner, "sql_session_model", None)
    db = getattr(inner, "client", None)
    if model is None or db is None:
        return None
    with app.app_context():
        bind = getattr(model, "__bind_key__", None)
        engine = db.engines[bind] if bind else db.engine
    return SQLStore(engine, model.__table__, decode, encode)

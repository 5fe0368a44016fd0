"""Datetimes in the store: on SQLite, `UTCDateTime` writes its text in one step; it must be
exactly the text SQLAlchemy's own conversion writes (databases made before hold that text, and
queries compare it as text), and read back as the same instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.types import TypeDecorator

from aggregator.store.schema import UTCDateTime

offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda m: timezone(timedelta(minutes=m))
)
instants = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
).flatmap(lambda d: offsets.map(lambda tz: d.astimezone(tz)))


@settings(max_examples=2000, deadline=None)
@given(instants)
def test_the_sqlite_text_is_sqlalchemys(value):
    dialect = sqlite.dialect()
    used = UTCDateTime().dialect_impl(dialect)  # the type as SQLite statements use it
    fast = used.bind_processor(dialect)
    slow = TypeDecorator.bind_processor(used, dialect)  # this type's conversion, then SQLAlchemy's
    assert isinstance(slow(value), str)
    assert fast(value) == slow(value)


def test_none_and_naive_values():
    process = UTCDateTime().dialect_impl(sqlite.dialect()).bind_processor(sqlite.dialect())
    assert process(None) is None
    with pytest.raises(ValueError, match="naive"):
        process(datetime(2024, 1, 1))


def test_a_round_trip_through_sqlite_keeps_the_instant(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 't.sqlite3'}")
    t = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("at", UTCDateTime))
    t.metadata.create_all(engine)
    when = datetime(2024, 5, 1, 16, 0, 0, 123456, tzinfo=timezone(timedelta(hours=8)))
    with engine.begin() as c:
        c.execute(insert(t).values(id=1, at=when))
    with engine.connect() as c:
        assert c.execute(select(t.c.at)).scalar_one() == when
        assert c.exec_driver_sql("SELECT at FROM t").scalar_one() == "2024-05-01 08:00:00.123456"
        # comparisons in SQL see the same text
        assert c.execute(select(t.c.id).where(t.c.at >= when - timedelta(microseconds=1))).scalar_one() == 1
    engine.dispose()

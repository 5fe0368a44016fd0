"""Alembic's environment: migrations run on the connection `database.upgrade` hands over
(in its transaction), never on a URL of their own."""

from __future__ import annotations

from alembic import context

from aggregator.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()

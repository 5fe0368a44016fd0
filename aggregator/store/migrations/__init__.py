"""Alembic migrations of the store's schema (`aggregator db upgrade`)."""

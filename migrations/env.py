"""Alembic environment: the URL comes from Fitserve's settings (or the caller's config)."""

from __future__ import annotations

from alembic import context

from core.db import make_engine, ours
from core.settings import get_settings
from core.tables import Base

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().database_url


def run() -> None:
    if context.is_offline_mode():
        context.configure(
            url=url,
            target_metadata=Base.metadata,
            literal_binds=True,
            render_as_batch=True,
            include_name=ours,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url)
    with engine.connect() as connection:
        # render_as_batch: SQLite alters tables by copy; the same revisions then run on both.
        # include_name: autogenerate must not drop Optuna's tables (core.db.OPTUNA_TABLES).
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=True,
            include_name=ours,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()

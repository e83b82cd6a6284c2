"""Alembic environment of the shop tables (run through ``core.db.migrate``)."""

from core.db import run_env
from shop_bridge.models import Base

run_env(Base.metadata)

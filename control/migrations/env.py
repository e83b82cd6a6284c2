from control.models import metadata
from core.db import run_env

run_env(metadata)

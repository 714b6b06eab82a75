"""Local storage: SQLite, one file per volunteer (:mod:`probe.store.sqlite`); the schema steps
and readers for research (:mod:`probe.store.research`), merging databases
(:mod:`probe.store.merge`) and OONI imports (:mod:`probe.store.imports`)."""

from . import research  # noqa: F401  (registers schema steps m005 onwards)
from .sqlite import Store, load_observations, open_db

__all__ = ["Store", "load_observations", "open_db"]

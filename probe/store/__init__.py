"""Local storage: SQLite, one file per volunteer (:mod:`probe.store.sqlite`)."""

from .sqlite import Store, load_observations, open_db

__all__ = ["Store", "load_observations", "open_db"]

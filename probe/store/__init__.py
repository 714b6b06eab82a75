"""Local storage: SQLite, one file per volunteer (:mod:`probe.store.sqlite`); its schema steps
in order (:mod:`probe.store.schema`), readers for research (:mod:`probe.store.research`),
merging databases (:mod:`probe.store.merge`) and OONI imports (:mod:`probe.store.imports`)."""

from .sqlite import Store, load_observations, open_db

__all__ = ["Store", "load_observations", "open_db"]

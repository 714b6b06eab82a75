"""The collector: many volunteers' measurements in one PostgreSQL database.

``probe collector serve`` (:mod:`.server`, over :mod:`.http`) speaks OONI's collector
protocol; :mod:`.ingest` checks, re-analyses and writes what arrives; :mod:`.schema` creates
and migrates the database (measurements partitioned by month); :mod:`.tokens` holds the
volunteers' tokens; :mod:`.reader` reads timelines and reports back; :mod:`.bridge` is the
one place that uses the OONI format and timeline modules.

Everything here but :mod:`.bridge` needs the ``collector`` extra (``pip install
'probe[collector]'``: psycopg and its pool); this package imports none of it on its own, so
``probe upload`` (which uses :mod:`.bridge` only) works without it.
"""

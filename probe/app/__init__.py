"""The application: what the ``probe`` command does, composed from the libraries below it.

A run (:mod:`~probe.app.run`: targets measured, analysed and stored one by one), the
network's identity before it (:mod:`~probe.app.identity`), re-analysis of stored
observations (:mod:`~probe.app.reanalyze`), uploads to a collector (:mod:`~probe.app.upload`),
cron and systemd (:mod:`~probe.app.schedule`), the configuration (:mod:`~probe.app.config`)
and target lists (:mod:`~probe.app.targets`). Only :mod:`probe.cli` imports this package;
nothing below it does (``tests/test_layers.py``).
"""

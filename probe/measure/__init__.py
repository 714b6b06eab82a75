"""Measuring targets: one target's steps (:mod:`~probe.measure.measurer`), the test-helper
client (:mod:`~probe.measure.control`) and a whole run, analysed and stored target by target
(:mod:`~probe.measure.runner`)."""

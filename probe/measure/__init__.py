"""Measuring targets: one target's steps (:mod:`~probe.measure.measurer`), the test-helper
client (:mod:`~probe.measure.control`) and the volunteer's addresses scrubbed
(:mod:`~probe.measure.privacy`). A whole run is the application's (:mod:`probe.app.run`)."""

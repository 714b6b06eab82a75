"""Measuring targets: one target's steps (:mod:`~probe.measure.measurer`), what a measurement
is allowed (:mod:`~probe.measure.settings`), politeness towards servers
(:mod:`~probe.measure.politeness`), which redirects are followed
(:mod:`~probe.measure.redirects`), the test-helper client (:mod:`~probe.measure.control`) and
the volunteer's addresses scrubbed (:mod:`~probe.measure.privacy`). A whole run is the
application's (:mod:`probe.app.run`)."""

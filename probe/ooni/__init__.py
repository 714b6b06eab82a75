"""OONI's protocols and formats, spoken in one place (pure, so the analysis can read OONI's
shapes): the Web Connectivity test-helper protocol (:mod:`~probe.ooni.helper_protocol`), the
data format's names and vocabularies (:mod:`~probe.ooni.format`), our measurements written in
it (:mod:`~probe.ooni.export`), OONI's read back as our observations
(:mod:`~probe.ooni.importing`) and measurement files (:mod:`~probe.ooni.files`)."""

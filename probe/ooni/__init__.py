"""OONI's protocols and formats, spoken in one place: the Web Connectivity test-helper
protocol (:mod:`~probe.ooni.helper_protocol`). Pure, so the analysis can read OONI's shapes."""

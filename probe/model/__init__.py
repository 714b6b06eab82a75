"""What probe knows, as plain data: records of observations, verdicts, failure strings,
addresses. No I/O and no network library: everything else builds on this."""

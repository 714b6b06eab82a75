"""Reproducible results made with probe (lab re-enactments), outside the probe package."""

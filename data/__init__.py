"""Datalists of the challenge layouts, cross-validation splits and synthetic demo data."""

"""Ignite event handlers used by the bundles' workflows."""

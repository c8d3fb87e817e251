"""Pair matching, robust geometry estimators and the verification worker pool."""

"""Evaluation: benchmark prompt sets and answer files, pair metrics, the optional local judge, plots."""

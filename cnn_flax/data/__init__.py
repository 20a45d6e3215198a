"""Datasets (registry of sources) and the Grain input pipeline."""

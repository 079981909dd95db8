"""Data side of imf: the SQLite entity store, dataset importers, feature files and encoders.

Nothing in this package imports the IMF model; torch is imported lazily, only where tensors are
returned or encoders run.
"""

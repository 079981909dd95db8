"""Datasets bundled with imf."""

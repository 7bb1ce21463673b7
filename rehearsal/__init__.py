"""Rehearsal of the paper's run: real photographs laid out as the paper's datasets (see datasets.py)."""

"""Algorithms: each says how to build a batch and compute its loss; the engine does the rest."""

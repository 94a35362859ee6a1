"""Inputs: finding images (paths, folders, ``-`` and stdin, ``--shard``), decoding, caching."""

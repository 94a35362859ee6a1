"""Anomaly detection with a trained autoencoder.

Modules, from the bottom up: ``scores`` (error maps, per-image scores),
``thresholds`` (rules fitted to validation scores), ``labels`` (folder names,
labels CSV, ground-truth masks), ``evaluation`` (image and pixel metrics),
``heatmaps`` (error maps drawn over images), ``results`` (one row per image),
``summary`` (the run's report), ``options`` (``ScoreOptions``) and
``pipeline`` (``score_images``: the streaming run behind ``aetool score``).
"""

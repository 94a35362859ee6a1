"""Denoising: image I/O that keeps formats, tiling, colour and ensembles, refinement, pipeline."""

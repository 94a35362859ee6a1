"""aetool: anomaly detection and denoising with autoencoders."""

__version__ = "0.1.0"

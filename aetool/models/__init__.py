"""Models: the architecture registry, one module per architecture, the model file."""

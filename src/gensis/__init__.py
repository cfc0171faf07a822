"""gensis: Gen-SIS (Generative Self-augmentation Improves Self-supervised Learning), end to end."""

__version__ = "0.1.0"

"""mdw-kit: distil noisy image-text datasets into small clean synthetic ones (MDW)."""
__version__ = "0.1.0"

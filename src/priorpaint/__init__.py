"""priorpaint: an improved-DDPM prior trained on any image domain, and RePaint inpainting with it."""

__version__ = "0.1.0"

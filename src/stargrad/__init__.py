"""stargrad: learn, explain and compare stellar-label models on APOGEE spectra, in JAX.

Importing the package does nothing else: each workflow job sets JAX up for its device before
JAX is imported (`stargrad.job`)."""

__version__ = "0.1.0"

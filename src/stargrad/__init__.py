"""stargrad: learn, explain and compare stellar-label models on APOGEE spectra, in JAX."""
__version__ = "0.1.0"

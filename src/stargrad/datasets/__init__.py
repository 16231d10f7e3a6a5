"""Compiled datasets: which stars (`select`), their spectra and labels gathered into
per-split FITS files (`compile`), and those files read back in batches (`dataset`)."""

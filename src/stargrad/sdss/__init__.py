"""SDSS DR17 survey files: the APOGEE grid and facts (`apogee`), the allStar and spectrum
file layout (`survey`), downloads from the SAS (`download`), one star's spectrum as
every stage reads it (`spectra`) and the apStar continuum (`continuum`)."""

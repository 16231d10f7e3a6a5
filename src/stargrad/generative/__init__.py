"""Judging generative models of spectra: reconstruction, denoising and anomaly scores
(`analysis`), and generated spectra against real ones (`frechet`,
`sample_quality`)."""

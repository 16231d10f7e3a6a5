# Generative stage (VAE and PCA of spectra): placeholder until the analyses land.


def generative_targets():
    return []

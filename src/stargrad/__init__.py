"""stargrad: learn, explain and compare stellar-label models on APOGEE spectra, in JAX.

`stargrad.load(model_dir)` applies a trained model to any spectra (`stargrad.api`). Importing
the package imports nothing else: each workflow job sets JAX up for its device before JAX is
imported (`stargrad.pipeline.job`), and rule code digests follow only what a rule's script imports
(`stargrad.pipeline.codedigest`), which is why `load` is looked up by name here."""
import importlib

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "load":
        return importlib.import_module(f"{__name__}.api").load
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

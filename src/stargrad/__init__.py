"""stargrad: learn, explain and compare stellar-label models on APOGEE spectra, in JAX."""
import os

__version__ = "0.1.0"

# XLA's multi-threaded Eigen pool on CPU can wedge (every thread parked on a futex) while
# materialising large vmapped graphs such as batched Jacobians and Fisher matrices; we saw
# it in the truth products job. Single-threaded Eigen avoids it. XLA reads the flag when the
# backend starts, so this works as long as no JAX computation ran before stargrad was
# imported. Set xla_cpu_multi_thread_eigen yourself in XLA_FLAGS to override.
if "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_multi_thread_eigen=false").strip()

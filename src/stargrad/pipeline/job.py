"""How a rule's job starts: JAX set up for the job's device before JAX is imported, the job's
log file, and a record of where and how it runs. Every rule script begins

    with rule_job(snakemake) as log:
        from stargrad.stages... import ...

so that the environment is in place when the library (and JAX) is imported.

Devices (the rule's `device` param, from the config's `device` for the GPU rules):
- "cpu": JAX_PLATFORMS=cpu, so a job never initialises a GPU it was not given;
- "gpu": JAX must see a GPU, else the job stops at once with a clear message (unless the
  test-only allowance STARGRAD_ALLOW_CPU_AS_GPU=1 is set, which is logged);
- "auto": a GPU when JAX sees one, else the CPU.
GPU jobs do not preallocate the card (XLA_PYTHON_CLIENT_PREALLOCATE=false, or the fraction
`gpu_memory_fraction` via XLA_PYTHON_CLIENT_MEM_FRACTION), so several jobs can share one.
On every job XLA's multi-threaded Eigen pool on CPU is off (--xla_cpu_multi_thread_eigen=false):
it can wedge, every thread parked on a futex, while materialising large vmapped graphs such as
batched Jacobians and Fisher matrices. Set the flag in XLA_FLAGS yourself to override.
Every job keeps XLA's compiled programs in JAX's persistent compilation cache
(`compilation_cache_dir`): a job that compiles what an earlier job compiled loads it instead.

Every log line carries the seconds since the job's process started; the set-up's last line
(SET_UP) gives the start-up time and CPU seconds, the last line (DONE) the job's own, and in a
job that runs JAX the line before it (JAX_PROGRAMS) how many programs JAX made and how long it
spent tracing, lowering and compiling them; bench/dag_profile.py reads them (`job_timing`).
Only logs carry times: no output file does.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import re
import resource
import socket
import string
import time
import traceback
from pathlib import Path

DEVICES = ("cpu", "gpu", "auto")
ALLOW_CPU_AS_GPU = "STARGRAD_ALLOW_CPU_AS_GPU"
EIGEN_FLAG = "--xla_cpu_multi_thread_eigen=false"
CACHE_ENV = "STARGRAD_COMPILATION_CACHE"
#: Compilations shorter than this (s) are not written to the cache (JAX's default is 1 s).
CACHE_MIN_COMPILE_S = 0.1
#: The set-up's last log line and the job's last one: wall and CPU seconds since the process
#: started (CPU: this process and its finished children).
SET_UP = "set up after {wall:.2f} s, {cpu:.2f} s CPU"
DONE = "done after {wall:.2f} s, {cpu:.2f} s CPU"
#: A JAX job's line before DONE: the programs it made (each jitted function per argument shapes,
#: and each operation run outside one) and the wall seconds of the three steps before a program
#: runs. The compilation cache saves only the last.
JAX_PROGRAMS = ("JAX programs: {programs}, tracing {trace:.2f} s, lowering {lower:.2f} s, "
                "compiling or loading {compile:.2f} s")
#: jax.monitoring's duration events of those steps.
_JAX_STEPS = {"/jax/core/compile/jaxpr_trace_duration": "trace",
              "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
              "/jax/core/compile/backend_compile_duration": "compile"}
_jax_counts = {"programs": 0, **dict.fromkeys(_JAX_STEPS.values(), 0.0)}
_IMPORTED = time.monotonic()


class DeviceError(RuntimeError):
    """The job was asked for a device JAX cannot see."""


def host_cpu() -> str:
    """A short digest of this host's CPU model and instruction-set flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [line for line in info.splitlines()
                 if line.startswith(("model name", "flags", "Features", "CPU part"))]
        described = "\n".join(dict.fromkeys(lines))
    except OSError:
        described = f"{platform.machine()} {platform.processor()}"
    return hashlib.sha256(described.encode()).hexdigest()[:12]


def compilation_cache_dir(setting: str | None = None, environ=None) -> Path | None:
    """Where a job's JAX keeps compiled programs: $STARGRAD_COMPILATION_CACHE, else `setting`
    (the config's jobs.compilation_cache), else the user cache
    ($XDG_CACHE_HOME, default ~/.cache, /stargrad/jax); "off" turns the cache off. Entries go
    to a subdirectory per host CPU (`host_cpu`): XLA compiles CPU programs for the host's
    instruction set, which JAX's cache key leaves out, so hosts of different CPUs that share a
    home directory never load each other's programs. Cached programs are the ones a fresh
    compilation gives: outputs are the same bytes with the cache on or off (tested)."""
    environ = os.environ if environ is None else environ
    chosen = environ.get(CACHE_ENV) or setting
    if chosen == "off":
        return None
    if not chosen:
        chosen = Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stargrad" / "jax"
    return Path(chosen).expanduser() / host_cpu()


def jax_environment(device: str, gpu_memory_fraction: float | None = None,
                    environ=None, compilation_cache: str | None = None) -> dict:
    """The environment variables a job on `device` needs before JAX is imported (returned,
    and set in `environ`, os.environ by default); `compilation_cache` as
    `compilation_cache_dir`'s setting."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        environ["XLA_FLAGS"] = f"{flags} {EIGEN_FLAG}".strip()
    cache = compilation_cache_dir(compilation_cache, environ)
    if cache is not None:
        environ["JAX_COMPILATION_CACHE_DIR"] = str(cache)
        environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = f"{CACHE_MIN_COMPILE_S:g}"
    else:
        environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    if device == "cpu":
        environ["JAX_PLATFORMS"] = "cpu"
        return _jax_keys(environ)
    if environ.get("JAX_PLATFORMS") == "cpu":       # inherited from a CPU context
        del environ["JAX_PLATFORMS"]
    if gpu_memory_fraction is None:
        environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    else:
        environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{float(gpu_memory_fraction):g}"
    return _jax_keys(environ)


def _jax_keys(environ) -> dict:
    keys = ("XLA_FLAGS", "JAX_PLATFORMS", "XLA_PYTHON_CLIENT_PREALLOCATE",
            "XLA_PYTHON_CLIENT_MEM_FRACTION", "JAX_COMPILATION_CACHE_DIR")
    return {k: environ[k] for k in keys if k in environ}


def where_it_runs(threads: int | None = None) -> str:
    """Host, SLURM job, visible GPUs and usable CPUs of this process, for the job's log."""
    cpus = len(os.sched_getaffinity(0))
    parts = [f"host {socket.gethostname()}",
             f"SLURM job {os.environ.get('SLURM_JOB_ID', 'none')}",
             f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}",
             f"{cpus} CPUs usable" + (f", {threads} threads declared" if threads else "")]
    return ", ".join(parts)


def check_device(device: str, log) -> str:
    """Import JAX, start counting its programs (`watch_jax_programs`), log the backend and
    devices it uses, and enforce `device`; returns the platform ("cpu", "gpu", ...)."""
    import jax

    watch_jax_programs()
    platform = jax.default_backend()
    log(f"JAX {jax.__version__}: backend {platform}, devices {jax.devices()}")
    if device == "gpu" and platform != "gpu":
        if os.environ.get(ALLOW_CPU_AS_GPU) == "1":
            log(f"{ALLOW_CPU_AS_GPU}=1: this GPU rule computes on the {platform} (test "
                f"allowance)")
        else:
            raise DeviceError(f"device: gpu, but JAX sees no GPU (backend {platform}, "
                              f"CUDA_VISIBLE_DEVICES="
                              f"{os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}); install "
                              f"the CUDA build of jaxlib (envs/stargrad-cuda.yaml) or set "
                              f"device: cpu or auto")
    return platform


@functools.cache
def watch_jax_programs() -> None:
    """Count, from now on, the programs JAX makes in this process and the seconds of each step
    (`jax_programs_line`)."""
    from jax import monitoring

    def record(event, duration, **_):
        step = _JAX_STEPS.get(event)
        if step is not None:
            _jax_counts[step] += duration
            _jax_counts["programs"] += step == "compile"
    monitoring.register_event_duration_secs_listener(record)


def jax_programs_line() -> str:
    """JAX_PROGRAMS filled in with what `watch_jax_programs` counted."""
    return JAX_PROGRAMS.format(**_jax_counts)


def check_library(workflow_src: Path | None, log) -> None:
    """Fail clearly when the imported stargrad is not the workflow's own src/stargrad (an
    installed copy would run other code than the rule's code digest describes)."""
    import stargrad

    here = Path(stargrad.__file__).resolve().parent
    log(f"stargrad {stargrad.__version__} from {here}")
    if workflow_src is not None and here != (Path(workflow_src) / "stargrad").resolve():
        raise ImportError(f"this job imported stargrad from {here}, not this workflow's "
                          f"{Path(workflow_src) / 'stargrad'}; uninstall that copy from the job's "
                          f"environment, or install this checkout with `pip install -e`")


def process_wall_s() -> float:
    """Seconds since this process started (Linux: from /proc; elsewhere since this module was
    imported, which leaves out the interpreter's own start)."""
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])       # field 22, starttime
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic() - _IMPORTED


#: When this job's process started, as a `time.monotonic()` value: a walltime counts from here,
#: interpreter start, imports and data loading included.
STARTED = time.monotonic() - process_wall_s()


def process_cpu_s() -> float:
    """CPU seconds (user + system) of this process and its finished child processes."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                         resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _line_pattern(template: str) -> re.Pattern:
    """A regex of the lines `template` writes, one named group per (numeric) field."""
    return re.compile("".join(re.escape(text) + (rf"(?P<{field}>[\d.]+)" if field else "")
                              for text, field, _, _ in string.Formatter().parse(template)))


#: Each timing line's pattern and the `job_timing` key of each of its fields.
_TIMING_LINES = (
    (_line_pattern(SET_UP), {"wall": "setup_s", "cpu": "setup_cpu_s"}),
    (_line_pattern(DONE), {"wall": "wall_s", "cpu": "cpu_s"}),
    (_line_pattern(JAX_PROGRAMS), {"programs": "programs", "trace": "trace_s",
                                   "lower": "lower_s", "compile": "compile_s"}))


def job_timing(log_text: str) -> dict:
    """{"setup_s", "setup_cpu_s", "wall_s", "cpu_s"} from a job log's SET_UP and DONE lines and
    {"programs", "trace_s", "lower_s", "compile_s"} from its JAX_PROGRAMS line (the keys of the
    lines it has)."""
    found = {}
    for pattern, keys in _TIMING_LINES:
        match = pattern.search(log_text)
        if match:
            found.update({keys[field]: (int if field == "programs" else float)(value)
                          for field, value in match.groupdict().items()})
    return found


@contextlib.contextmanager
def open_log(path):
    """Yield log(msg) writing lines to `path`, each with the time of day and the seconds since
    the process started; an exception's traceback is logged before it propagates."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        def log(message: str) -> None:
            handle.write(f"[{time.strftime('%H:%M:%S')} +{process_wall_s():.1f}s] {message}\n")
            handle.flush()
        try:
            yield log
        except BaseException:
            handle.write(traceback.format_exc())
            handle.flush()
            raise


def walltime_s(snakemake) -> float | None:
    """The job's walltime in seconds when the SLURM executor submitted it (sbatch --time is its
    `runtime` resource, in minutes): the workflow sets the resource `walltime_limited` to 1
    only inside such a job (Snakemake in remote mode). None otherwise — a local run, even one inside an salloc
    allocation (SLURM_JOB_ID set), is not stopped at the rule's runtime."""
    runtime = getattr(snakemake.resources, "runtime", None)
    if not int(getattr(snakemake.resources, "walltime_limited", 0)) or runtime is None:
        return None
    return 60.0 * float(runtime)


@contextlib.contextmanager
def rule_job(snakemake):
    """Set up a rule's job (see the module docstring) and yield its log function.

    Reads from the job: log[0], rule, threads, resources.attempt (1 if absent), params.device
    (rules that run JAX; absent: the CPU, and JAX is not imported here),
    params.gpu_memory_fraction and config jobs.compilation_cache (through the config, not a
    param: where programs are cached changes no result, so it reruns nothing). Snakemake empties the log before a retry, so each attempt's
    log starts with its attempt number."""
    device = getattr(snakemake.params, "device", None)
    fraction = getattr(snakemake.params, "gpu_memory_fraction", None)
    cache = snakemake.config.get("jobs", {}).get("compilation_cache")
    environment = jax_environment(device or "cpu", fraction, compilation_cache=cache)
    attempt = int(getattr(snakemake.resources, "attempt", 1))
    with open_log(snakemake.log[0]) as log:
        log(f"rule {snakemake.rule}, attempt {attempt}: {where_it_runs(snakemake.threads)}")
        log("environment: " + ", ".join(f"{k}={v}" for k, v in environment.items()))
        check_library(Path(snakemake.scriptdir).parent / "src", log)
        if device is not None:
            check_device(device, log)
        log(SET_UP.format(wall=process_wall_s(), cpu=process_cpu_s()))
        yield log
        if device is not None:
            log(jax_programs_line())
        log(DONE.format(wall=process_wall_s(), cpu=process_cpu_s()))

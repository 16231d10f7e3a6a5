"""How a job starts (stargrad.pipeline.job): the compilation cache's location and that a program
loaded from it gives the bytes a fresh compilation gives."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from stargrad.pipeline import job

#: Trains a small BCNN (convolutions, dropout, the optax loop) and predicts with MC dropout in a
#: fresh process whose JAX uses the compilation cache argv[2] ("off": none); writes the
#: parameters and predictions to argv[1] and prints JAX's cache hits and misses.
TRAIN_AND_PREDICT = """
import json, os, sys
from stargrad.pipeline.job import jax_environment
jax_environment("cpu", compilation_cache=sys.argv[2])
import jax, numpy as np
from jax import monitoring
from stargrad import models, train
from stargrad.mc import mc_predict
from stargrad.params_io import save_params

events = {"hits": 0, "misses": 0}
def count(event, **_):
    for name in events:
        events[name] += event == f"/jax/compilation_cache/cache_{name}"
monitoring.register_event_listener(count)

rng = np.random.default_rng(3)
x = rng.normal(size=(48, 64)).astype(np.float32)
y = np.stack([x[:, :8].mean(1), x[:, 30:40].mean(1)], 1).astype(np.float32)
data = {"x": x, "y": y, "y_err": np.full_like(y, 0.1), "valid": np.ones_like(y, bool)}
model = models.build("bcnn", n_inputs=64, n_outputs=2, num_filters=[2, 4], num_hidden=[16, 8])
cfg = train.TrainConfig(learning_rate=3e-3, batch_size=16, max_epochs=2)
params, _ = train.fit(model, {k: v[:32] for k, v in data.items()},
                      {k: v[32:] for k, v in data.items()}, cfg, jax.random.key(0),
                      log=lambda *_: None)
save_params(os.path.join(sys.argv[1], "params.npz"), params)
predicted = mc_predict(model, params, x, jax.random.key(1), mc_samples=4, batch_size=16)
np.savez(os.path.join(sys.argv[1], "predictions.npz"), **predicted)
print(json.dumps(events))
"""


def run_job(out: Path, cache: str) -> dict:
    out.mkdir()
    environ = {k: v for k, v in os.environ.items() if k != job.CACHE_ENV}   # the session's
    proc = subprocess.run([sys.executable, "-c", TRAIN_AND_PREDICT, str(out), cache],
                          capture_output=True, text=True, env=environ)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_programs_loaded_from_the_cache_give_the_same_bytes(tmp_path):
    cache = tmp_path / "cache"
    off = run_job(tmp_path / "off", "off")
    cold = run_job(tmp_path / "cold", str(cache))
    stored = sorted(p.name for p in cache.rglob("*-cache"))   # JAX's file per stored program
    warm = run_job(tmp_path / "warm", str(cache))
    assert off == {"hits": 0, "misses": 0}
    assert cold["hits"] == 0 and cold["misses"] > 0 and stored
    # every program the cold run stored is loaded, not compiled; those that compiled in under
    # CACHE_MIN_COMPILE_S were not stored and miss again (how many depends on the load, so the
    # misses are not compared)
    assert warm["hits"] >= len(stored)
    for name in ("params.npz", "predictions.npz"):
        reference = (tmp_path / "off" / name).read_bytes()
        assert (tmp_path / "cold" / name).read_bytes() == reference
        assert (tmp_path / "warm" / name).read_bytes() == reference


def test_cache_location_env_over_config_over_user_cache(tmp_path):
    home = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    cpu = job.host_cpu()
    assert job.compilation_cache_dir(None, home) == tmp_path / "xdg" / "stargrad" / "jax" / cpu
    assert job.compilation_cache_dir(str(tmp_path / "c"), home) == tmp_path / "c" / cpu
    env = {**home, job.CACHE_ENV: str(tmp_path / "e")}
    assert job.compilation_cache_dir(str(tmp_path / "c"), env) == tmp_path / "e" / cpu
    assert job.compilation_cache_dir("off", home) is None
    assert job.compilation_cache_dir(str(tmp_path / "c"), {**home, job.CACHE_ENV: "off"}) is None
    environ = dict(home)
    job.jax_environment("cpu", environ=environ, compilation_cache="off")
    assert "JAX_COMPILATION_CACHE_DIR" not in environ
    job.jax_environment("cpu", environ=environ)
    assert environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "xdg" / "stargrad" / "jax" / cpu)


def test_job_timing_reads_the_set_up_and_done_lines():
    text = "\n".join(["[10:00:00 +0.1s] rule train, attempt 1: host h",
                      "[10:00:02 +2.3s] " + job.SET_UP.format(wall=2.25, cpu=1.5),
                      "[10:00:09 +9.0s] epoch 1",
                      "[10:00:10 +10.0s] " + job.DONE.format(wall=10.01, cpu=17.25)])
    assert job.job_timing(text) == {"setup_s": 2.25, "setup_cpu_s": 1.5, "wall_s": 10.01,
                                    "cpu_s": 17.25}
    assert job.job_timing(text.rsplit("\n", 1)[0]) == {"setup_s": 2.25, "setup_cpu_s": 1.5}
    jax_line = job.JAX_PROGRAMS.format(programs=105, trace=4.55, lower=2.875, compile=2.08)
    assert job.job_timing(text.replace("epoch 1", jax_line)) == {
        "setup_s": 2.25, "setup_cpu_s": 1.5, "wall_s": 10.01, "cpu_s": 17.25, "programs": 105,
        "trace_s": 4.55, "lower_s": 2.88, "compile_s": 2.08}
    before = job.process_wall_s()
    time.sleep(0.2)
    assert job.process_wall_s() - before >= 0.2 and job.process_cpu_s() > 0


def test_jax_programs_line_counts_each_new_program_once():
    """After `watch_jax_programs` (which a JAX job's set-up calls), a program JAX makes for the
    first time adds one program and its seconds; running it again adds nothing."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    job.watch_jax_programs()
    job.watch_jax_programs()                              # once per process: no double count
    counted = job.job_timing(job.jax_programs_line())
    program = jax.jit(lambda x: jnp.cumsum(jnp.sin(x) * 3.0) - 0.5)
    program(np.ones(17, np.float32)).block_until_ready()       # numpy inputs: no program
    first = job.job_timing(job.jax_programs_line())
    program(np.zeros(17, np.float32)).block_until_ready()
    again = job.job_timing(job.jax_programs_line())
    assert first["programs"] == counted["programs"] + 1, (counted, first)
    assert first["trace_s"] + first["lower_s"] > counted["trace_s"] + counted["lower_s"]
    assert again == first


def test_atomic_write_removes_the_temporary_files_of_a_killed_writer(tmp_path):
    """A writer killed inside `atomic_path` leaves its `.NAME.*.part`; the next write of the same
    file removes it (a rerun must leave no stray files among the results) and touches no other
    file's temporaries."""
    from stargrad.provenance import write_json
    target = tmp_path / "out[1].json"
    orphan = tmp_path / ".out[1].json.abc123.part"
    other = tmp_path / ".other.json.abc123.part"
    orphan.write_text("partial")
    other.write_text("partial")
    write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, target.name]

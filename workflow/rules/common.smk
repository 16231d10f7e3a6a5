# Shared set-up: validate the config (filling defaults), check what the schema cannot, derive
# names, and the digests every rule takes as params.
import os
import sys
from functools import lru_cache
from pathlib import Path

import fitsio
from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from stargrad import models, provenance  # noqa: E402
from stargrad.sdss.apogee import ASPCAP_LABELS  # noqa: E402
from stargrad.pipeline.codedigest import code_digest  # noqa: E402
from stargrad.tasks import tasks_from_config  # noqa: E402
from stargrad.train_config import RUN_CONTROL_FIELDS, TrainConfig  # noqa: E402


validate(config, schema="../schemas/config.schema.yaml")
# The run's own Snakemake checks the config (building every model, which imports JAX); the
# Snakemake that a cluster job starts to run one job parses this file again and does not.
if workflow.is_main_process:
    from stargrad.pipeline.configcheck import check_config

    check_config(config)

SURVEY_SOURCE = config["survey"]["source"]
SURVEY_NAME = config["survey"]["name"]
SURVEY_ROOT = f"resources/{SURVEY_NAME}"
ALLSTAR = f"{SURVEY_ROOT}/allStar-dr17-synspec_rev1.fits"
#: Real data: the allStar's SHA-1, written once it is checked (rule verify_allstar).
ALLSTAR_VERIFIED = f"{SURVEY_ROOT}/manifests/allStar.sha1"
N_CHUNKS = config["survey"]["sas"]["n_chunks"]
SPLITS = ["train", "valid", "test", "cluster"]
ORACLE_SPLITS = ["valid", "test"]     # valid for the oracle's calibration, test for its score
DATASETS = list(config["datasets"])
TASKS = tasks_from_config(config)
MODELS = config["models"]
TRAITS = {name: models.traits(spec["family"]) for name, spec in MODELS.items()}
MODEL_FILES = ["params.npz", "model.json", "norm.json"]
SPECTRA_KIND = config["survey"]["sas"]["spectra"] if SURVEY_SOURCE == "sas" else "aspcapStar"
MOCK_SHARDS = config["survey"]["mock"]["n_shards"]
MOCK_SETTINGS = {k: v for k, v in config["survey"]["mock"].items() if k != "n_shards"}
#: Settings that change no result file (how work is split into jobs, what the report shows,
#: which models get a catalogue): left out of the config digests, so that editing them reruns
#: nothing, and adding a model to catalogue.models runs that model's catalogue jobs alone.
NOT_IN_DIGESTS = (("survey", "mock", "n_shards"), ("attribute", "report_labels"),
                  ("catalogue", "models"))
#: Labels whose per-label Jacobian figures go into the report: attribute.report_labels and the
#: label of every single-label task (all figures stay on disk).
REPORT_LABELS = "|".join(sorted(set(config["attribute"]["report_labels"])
                                | {t.labels[0] for t in TASKS.values() if len(t.labels) == 1}))


# Rules whose jobs run JAX networks: `device: gpu` gives exactly these a GPU (resources gpu=1 and
# slurm_partition=jobs.gpu_partition, both decided in job_resources alone, and the CUDA conda
# environment); every other rule runs on the CPU, and so does JAX in the other rules that use it
# (the mock survey, its truth products).
GPU_RULES = ("train", "predict", "attribute", "catalogue_shard", "generative_reconstruction",
             "generative_latent_space", "generative_latent_regression", "generative_decoder",
             "generative_anomalies", "generative_denoise", "generative_samples")
DEVICE = config["device"]
JOBS = config["jobs"]


def jax_params(rule):
    """params of a job that runs JAX: its device (read by stargrad.pipeline.job before JAX is
    imported) and the GPU memory fraction."""
    return {"device": DEVICE if rule in GPU_RULES else "cpu",
            "gpu_memory_fraction": JOBS["gpu_memory_fraction"]}


def job_resources(rule, **resources):
    """`resources` of a job: the given ones; for GPU rules under `device: gpu`, gpu=1 and the
    GPU partition (`jobs.gpu_partition`), routed here only, from the same `device` as the job's
    JAX set-up (jax_params), so that nothing can send a job that computes on the CPU to the GPU
    partition or the reverse; the job's attempt (Snakemake hands it to resource callables only),
    which the job logs; and walltime_limited."""
    on_gpu = DEVICE == "gpu" and rule in GPU_RULES
    return {"gpu": int(on_gpu), **({"slurm_partition": JOBS["gpu_partition"]} if on_gpu else {}),
            "attempt": lambda wildcards, attempt: attempt,
            "walltime_limited": walltime_limited, **resources}


def walltime_limited(wildcards):
    """1 when the job runs as a job of the SLURM executor, whose sbatch --time is its runtime:
    evaluated again inside the SLURM job, where Snakemake runs in remote mode (the slurm-jobstep
    executor and the process it starts with srun); 0 otherwise, a local run inside an salloc
    allocation (SLURM_JOB_ID set, but no remote mode) included
    (stargrad.pipeline.job.walltime_s)."""
    return int(workflow.remote_exec and "SLURM_JOB_ID" in os.environ)


def environment(rule):
    """The conda environment of a rule: the CUDA build of JAX for GPU rules under device: gpu."""
    cuda = DEVICE == "gpu" and rule in GPU_RULES
    return "../../envs/stargrad-cuda.yaml" if cuda else "../../envs/stargrad.yaml"


def memory(base_mb, per_input_mb=0.0):
    """A `mem_mb` callable: base + per_input_mb × the job's input size in MB, times the attempt
    (a retry after running out of memory asks for more)."""
    return lambda wildcards, input, attempt: int(attempt * (base_mb + per_input_mb * input.size_mb))


def train_minutes(wildcards, input, attempt):
    """`runtime` of a train job: 20 min plus 0.05 s per epoch and MB of compiled training data
    (68 kB a spectrum; a rate about ten times below bcnn's on 2 CPU cores, see
    bench/bench_models.py), times the attempt. A job that runs out of it checkpoints and is
    retried (jobs.train_retries)."""
    epochs = TrainConfig.from_dict(MODELS[wildcards.model]["train"]).max_epochs
    return int(attempt * (20 + epochs * input.size_mb * 0.05 / 60))


def minutes(base, per_input_mb=0.0):
    """A `runtime` callable (minutes): base + per_input_mb × input MB, times the attempt."""
    return lambda wildcards, input, attempt: int(attempt * (base + per_input_mb * input.size_mb))


wildcard_constraints:
    dataset="|".join(DATASETS),
    task="|".join(TASKS),
    model="|".join(MODELS),
    split="|".join(SPLITS),


@lru_cache(maxsize=None)
def code_hash(script, *modules):
    """Digest of the library code that a job executes, i.e. its script and every stargrad module the
    script imports, read from the static import graph (`stargrad.pipeline.codedigest`), plus
    `modules` it reaches by name at run time (model families). Passed as a param so that an edit
    reruns exactly the rules that run the edited code."""
    return code_digest(str(Path(workflow.basedir) / "scripts" / script), *modules)


def family_module(model):
    return f"stargrad.models.{MODELS[model]['family']}"


def model_code_hash(script):
    """code_hash of a per-model job, i.e. its script plus the model's family module."""
    return lambda wildcards: code_hash(script, family_module(wildcards.model))


def config_digest(*paths):
    """Digest of the config entries at `paths` (key tuples), the part of the config a file
    depends on. Rules pass it as a param and write it into headers (SGCFGH), so editing one
    model's entry reruns only that model's jobs and leaves every other file unchanged."""
    parts = {}
    for path in paths:
        node = config
        for key in path:
            node = node[key]
        parts["/".join(path)] = _without_undigested(node, tuple(path))
    return provenance.config_hash(parts)


def _without_undigested(node, path):
    """`node` (the config entry at `path`) less the NOT_IN_DIGESTS settings under it."""
    for split in NOT_IN_DIGESTS:
        if split[:len(path)] == path and len(split) > len(path):
            node = _without(node, split[len(path):])
    return node


def _without(node, keys):
    if not isinstance(node, dict) or keys[0] not in node:
        return node
    out = dict(node)
    if len(keys) == 1:
        del out[keys[0]]
    else:
        out[keys[0]] = _without(out[keys[0]], keys[1:])
    return out


def dataset_entries(dataset):
    """Config entries a compiled dataset depends on: the survey and the dataset's own."""
    return ("survey",), ("datasets", dataset)


def model_settings(model):
    """What a trained model depends on in its config entry: family, hyper and train, less the
    training fields that steer a run but not its result (checkpointing, time budget); not its
    task list, so that adding a task to a model trains that task alone."""
    spec = MODELS[model]
    return {"family": spec["family"], "hyper": spec["hyper"],
            "train": {k: v for k, v in spec["train"].items() if k not in RUN_CONTROL_FIELDS}}


def model_digest(wildcards, *sections):
    """Digest of what a (model, task) job depends on: its dataset's entries, task, model
    settings, seed and the stage's own `sections` (e.g. "predict")."""
    return provenance.config_hash({
        "entries": config_digest(*dataset_entries(task_dataset(wildcards)),
                                 ("tasks", wildcards.task), ("seed",),
                                 *((s,) for s in sections)),
        "model": model_settings(wildcards.model)})


def checkpoint_dir(wildcards):
    """Where a train job keeps its checkpoints: outside its outputs, named by its code and
    config digests so that only the same code and config resume them."""
    code = model_code_hash("train_model.py")(wildcards)
    return f"results/checkpoints/{wildcards.model}/{wildcards.task}/{code}-{model_digest(wildcards)}"


def seismic_input():
    if SURVEY_SOURCE == "mock":
        return f"{SURVEY_ROOT}/seismic.csv"
    return config["survey"]["sas"]["seismic_catalogue"] or []


def allstar_verified():
    """The input that stands for a checked allStar. Real data needs its verify_allstar SHA-1
    (downloaded or placed by hand); the mock, which writes it, needs nothing."""
    return [] if SURVEY_SOURCE == "mock" else ALLSTAR_VERIFIED


def spectra_ready(dataset):
    """Files whose existence means every spectrum a dataset needs is on disk."""
    if SURVEY_SOURCE == "mock":
        return f"{SURVEY_ROOT}/truth.fits"
    return expand(f"{SURVEY_ROOT}/manifests/{dataset}/chunk{{chunk}}.csv", chunk=range(N_CHUNKS))


def catalogue_spectra():
    """Files whose existence means the spectra the catalogue reads are on disk: the mock's, or
    every allStar star's with survey.sas.fetch_all, else the selected datasets' (stars without
    a file are flagged NO_SPECTRUM)."""
    if SURVEY_SOURCE == "mock":
        return f"{SURVEY_ROOT}/truth.fits"
    sets = ["all"] if config["survey"]["sas"]["fetch_all"] else DATASETS
    return expand(f"{SURVEY_ROOT}/manifests/{{set}}/chunk{{chunk}}.csv", set=sets,
                  chunk=range(N_CHUNKS))


def mock_minutes(wildcards, attempt):
    """`runtime` of a mock_spectra job: 5 min plus 20 ms per star of its shard (some 5 times
    the measured rate), times the attempt."""
    n_stars = MOCK_SETTINGS["n_field"] + MOCK_SETTINGS["n_cluster"]
    return int((5 + 0.02 * n_stars / MOCK_SHARDS / 60) * attempt)


def catalogue_minutes(wildcards, input, attempt):
    """`runtime` of a catalogue shard: 10 min plus 2 ms per star of the shard and MC sample
    (at least one pass; some 50 times the CPU rate of the BCNNs), times the attempt; an hour
    while the allStar does not exist yet (a dry run)."""
    if not Path(input.allstar).exists():
        return 60 * attempt
    stars = fitsio.read_header(input.allstar, 1)["NAXIS2"] / config["catalogue"]["n_shards"]
    passes = max(1, config["catalogue"]["mc_samples"])
    return int(attempt * (10 + stars * passes * 0.002 / 60))


def dataset_split_files(dataset):
    return expand("results/data/{dataset}/{split}.fits", dataset=dataset, split=SPLITS)


def task_dataset(wildcards):
    return TASKS[wildcards.task].dataset


def has_cluster(dataset):
    return bool(config["datasets"][dataset]["split"].get("cluster_member"))


def task_splits(task):
    dataset = TASKS[task].dataset
    return ["train", "valid", "test"] + (["cluster"] if has_cluster(dataset) else [])


def has_truth(task):
    """Mock surveys carry the Cramér–Rao bound of every aspcap label (teff, logg, [X/H])."""
    return SURVEY_SOURCE == "mock" and any(l in ASPCAP_LABELS for l in TASKS[task].labels)


def model_task_pairs(supervised=True):
    """(model, task) pairs of supervised families (or, supervised=False, of VAE/PCA)."""
    return [(m, t) for m, spec in MODELS.items() for t in spec["tasks"]
            if TRAITS[m].supervised == supervised]


def models_of_task(task):
    return [m for m, t in model_task_pairs() if t == task]


def differentiable_models_of_task(task):
    return [m for m in models_of_task(task) if TRAITS[m].differentiable]


def oracle_tasks():
    """Tasks given an oracle row: mock surveys only (the true forward model is the mock's)."""
    return config["oracle"]["tasks"] if SURVEY_SOURCE == "mock" else []


def oracle_predictions(task):
    return (expand("results/predictions/oracle/{task}/{split}.fits", task=task,
                   split=ORACLE_SPLITS) if task in oracle_tasks() else [])


def all_targets():
    targets = [f"results/predictions/oracle/{t}/calibration.csv" for t in oracle_tasks()]
    for model, task in model_task_pairs():
        targets += expand("results/predictions/{model}/{task}/{split}.fits", model=model,
                          task=task, split=SPLITS)
        targets.append(f"results/compare/{task}/pred_vs_true_{model}.png")
        if TRAITS[model].differentiable:
            targets.append(f"results/attribution/{model}/{task}/jacobian.fits")
    for task in {t for _, t in model_task_pairs()}:
        targets.append(f"results/compare/{task}/metrics.csv")
    targets += [f"results/catalogue/{m}/{t}.fits" for m, tasks in config["catalogue"]["models"].items()
                for t in tasks]
    return targets + generative_targets()

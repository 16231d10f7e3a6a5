# Shared set-up: validate the config (filling defaults), derive names, helper functions.
import sys
from pathlib import Path

from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from stargrad import provenance  # noqa: E402
from stargrad.apogee import ASPCAP_LABELS  # noqa: E402
from stargrad.tasks import tasks_from_config  # noqa: E402


validate(config, schema="../schemas/config.schema.yaml")

SURVEY_SOURCE = config["survey"]["source"]
SURVEY_NAME = config["survey"]["name"]
SURVEY_ROOT = f"resources/{SURVEY_NAME}"
ALLSTAR = f"{SURVEY_ROOT}/allStar-dr17-synspec_rev1.fits"
N_CHUNKS = config["survey"]["sas"]["n_chunks"]
SPLITS = ["train", "valid", "test", "cluster"]
DATASETS = list(config["datasets"])
TASKS = tasks_from_config(config)
MODELS = config["models"]
UNSUPERVISED = {"vae", "pca"}
DIFFERENTIABLE = {"linear", "mlp", "bcnn", "bcnn_censored"}


def _check_references():
    for name, task in TASKS.items():
        if task.dataset not in config["datasets"]:
            raise ValueError(f"config: task {name!r} uses unknown dataset {task.dataset!r}")
    for name, spec in MODELS.items():
        unknown = [t for t in spec["tasks"] if t not in TASKS]
        if unknown:
            raise ValueError(f"config: model {name!r} lists unknown tasks {unknown}")
    predict = config["predict"]
    if predict["calibrate"] and ("test" in predict["mc_splits"]) != ("valid" in predict["mc_splits"]):
        raise ValueError("config: predict.calibrate fits on the valid split and applies to test, "
                         "so predict.mc_splits must list both or neither")


_check_references()


wildcard_constraints:
    dataset="|".join(DATASETS),
    task="|".join(TASKS),
    model="|".join(MODELS),
    split="|".join(SPLITS),


def code_hash(*modules):
    """Hash of the library code a rule runs, passed as a param so edits trigger reruns."""
    return provenance.code_hash(*modules)


#: Other family modules a family's module imports: editing them retrains its models too.
FAMILY_IMPORTS = {"vae": ("models/pca.py",)}


def model_code_hash(wildcards):
    family = MODELS[wildcards.model]["family"]
    return code_hash("train.py", "losses.py", "params_io.py", "dataset.py", "pipeline.py",
                     f"models/{family}.py", *FAMILY_IMPORTS.get(family, ()))


def config_digest(*paths):
    """Digest of the config entries at `paths` (key tuples), the part of the config a file
    depends on. Rules pass it as a param and write it into headers (SGCFGH), so editing one
    model's entry reruns only that model's jobs and leaves every other file unchanged."""
    parts = {}
    for path in paths:
        node = config
        for key in path:
            node = node[key]
        parts["/".join(path)] = node
    return provenance.config_hash(parts)


def dataset_entries(dataset):
    """Config entries a compiled dataset depends on: the survey and the dataset's own."""
    return ("survey",), ("datasets", dataset)


def model_digest(wildcards, *sections):
    """Digest of what a (model, task) job depends on: its dataset's entries, task, model, seed
    and the stage's own `sections` (e.g. "predict")."""
    return config_digest(*dataset_entries(task_dataset(wildcards)), ("tasks", wildcards.task),
                         ("models", wildcards.model), ("seed",), *((s,) for s in sections))


def seismic_input():
    if SURVEY_SOURCE == "mock":
        return f"{SURVEY_ROOT}/seismic.csv"
    return config["survey"]["sas"]["seismic_catalogue"] or []


def spectra_ready():
    """Files whose existence means every spectrum of the survey is on disk."""
    if SURVEY_SOURCE == "mock":
        return f"{SURVEY_ROOT}/truth.fits"
    return expand(f"{SURVEY_ROOT}/manifests/chunk{{chunk}}.csv", chunk=range(N_CHUNKS))


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
            if (spec["family"] not in UNSUPERVISED) == supervised]


def models_of_task(task):
    return [m for m, t in model_task_pairs() if t == task]


def differentiable_models_of_task(task):
    return [m for m in models_of_task(task) if MODELS[m]["family"] in DIFFERENTIABLE]


def all_targets():
    targets = []
    for model, task in model_task_pairs():
        targets += expand("results/predictions/{model}/{task}/{split}.fits", model=model,
                          task=task, split=SPLITS)
        targets.append(f"results/compare/{task}/pred_vs_true_{model}.png")
        if MODELS[model]["family"] in DIFFERENTIABLE:
            targets.append(f"results/attribution/{model}/{task}/jacobian.fits")
    for task in {t for _, t in model_task_pairs()}:
        targets.append(f"results/compare/{task}/metrics.csv")
    return targets + generative_targets()

"""Config checks the schema cannot express, run when the workflow's DAG is built, so that a
typo stops the run before any job starts: references between entries, every model's `hyper`
(by building the model for each of its tasks) and `train` (by parsing it), the calibration
mode and the generative stage's choices. Each error names the config key."""
from __future__ import annotations

from .. import models
from ..predictions import ORACLE
from ..stages.oracle import check_oracle_task
from ..stages.predict import check_calibration_mode
from ..tasks import tasks_from_config
from ..train import TrainConfig
from ..trained import build_model


class ConfigError(ValueError):
    """A config entry that cannot work; the message names it."""


def _check_model(name: str, spec: dict, tasks: dict) -> None:
    where = f"config: models.{name}"
    try:
        models.traits(spec["family"])
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}.family: {exc}") from None
    for task_name in spec["tasks"]:
        try:
            build_model(spec, tasks[task_name])
        except TypeError as exc:           # an unknown keyword: a typo in hyper
            raise ConfigError(f"{where}.hyper (family {spec['family']}, task {task_name}): "
                              f"{exc}".replace("build() got an", "an")) from None
        except ValueError as exc:
            raise ConfigError(f"{where}.hyper (family {spec['family']}, task {task_name}): "
                              f"{exc}") from None
    try:
        TrainConfig.from_dict(spec.get("train", {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}.train: {exc}") from None


def _check_generative(config: dict, tasks: dict) -> None:
    gen = config["generative"]
    generative = [m for m, spec in config["models"].items()
                  if not models.traits(spec["family"]).supervised and gen["task"] in spec["tasks"]]
    unsupervised = [m for m, spec in config["models"].items()
                    if not models.traits(spec["family"]).supervised]
    if unsupervised and gen["task"] not in tasks:
        raise ConfigError(f"config: generative.task {gen['task']!r} is not a task")
    choices = (("latent_model", gen, {"vae", "ae"}), ("anomaly_model", gen, {"vae", "ae", "pca"}),
               ("samples.vae_model", gen["samples"], {"vae"}),
               ("samples.pca_model", gen["samples"], {"pca"}))
    for key, section, families in choices:
        chosen = section[key.split(".")[-1]]
        if chosen is not None and (chosen not in generative
                                   or config["models"][chosen]["family"] not in families):
            raise ConfigError(f"config: generative.{key} {chosen!r} is not a model of family "
                              f"{sorted(families)} of task {gen['task']!r} (those are "
                              f"{generative})")
    label_model = gen["samples"]["label_model"]
    if label_model is not None:
        spec = config["models"].get(label_model)
        if (spec is None or not models.traits(spec["family"]).supervised
                or gen["task"] not in spec["tasks"]):
            raise ConfigError(f"config: generative.samples.label_model {label_model!r} is not a "
                              f"supervised model trained on task {gen['task']!r}")
    try:
        TrainConfig.from_dict(gen["regression_train"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config: generative.regression_train: {exc}") from None


def _check_oracle(config: dict, tasks: dict) -> None:
    if ORACLE in config["models"]:
        raise ConfigError(f"config: models.{ORACLE}: {ORACLE!r} is reserved (the mock's true "
                          f"forward model, config key oracle); name the model otherwise")
    for name in config["oracle"]["tasks"]:
        if name not in tasks:
            raise ConfigError(f"config: oracle.tasks: unknown task {name!r} (tasks are "
                              f"{sorted(tasks)})")
        try:
            check_oracle_task(tasks[name])
        except ValueError as exc:
            raise ConfigError(f"config: oracle.tasks: {exc}") from None


def check_config(config: dict) -> None:
    """Raise ConfigError naming the first entry of a schema-valid config that cannot work."""
    try:
        tasks = tasks_from_config(config)
    except ValueError as exc:
        raise ConfigError(f"config: tasks: {exc}") from None
    if "all" in config["datasets"]:
        raise ConfigError("config: datasets.all: 'all' is reserved (the download set of every "
                          "allStar star); name the dataset otherwise")
    for name, task in tasks.items():
        if task.dataset not in config["datasets"]:
            raise ConfigError(f"config: tasks.{name}.dataset: unknown dataset {task.dataset!r} "
                              f"(datasets are {sorted(config['datasets'])})")
    for name, spec in config["models"].items():
        unknown = [t for t in spec["tasks"] if t not in tasks]
        if unknown:
            raise ConfigError(f"config: models.{name}.tasks: unknown tasks {unknown} (tasks are "
                              f"{sorted(tasks)})")
        _check_model(name, spec, tasks)
    _check_oracle(config, tasks)
    predict = config["predict"]
    try:
        check_calibration_mode(predict["calibrate"], predict["mc_splits"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    _check_generative(config, tasks)
    for name, cat_tasks in config["catalogue"]["models"].items():
        spec = config["models"].get(name)
        if spec is None or not models.traits(spec["family"]).supervised:
            raise ConfigError(f"config: catalogue.models.{name}: not a supervised model of "
                              f"config.models")
        untrained = [t for t in cat_tasks if t not in spec["tasks"]]
        if untrained:
            raise ConfigError(f"config: catalogue.models.{name}: {name} is not trained on "
                              f"{untrained} (its tasks are {spec['tasks']})")

"""Rule train: train one model on one task."""
from pathlib import Path

from stargrad.stages.train import train_model
from stargrad.runlog import rule_logger
from stargrad.tasks import make_task

with rule_logger(snakemake.log[0]) as log:
    train_model(snakemake.input.train, snakemake.input.valid, Path(snakemake.output.params).parent,
                task=make_task(snakemake.wildcards.task, snakemake.params.task_spec),
                model_name=snakemake.wildcards.model, model_spec=snakemake.params.model_spec,
                seed=snakemake.params.seed, code_digest=snakemake.params.code,
                config_digest=snakemake.params.config_hash, log=log)

"""Rule train: train one model on one task."""
from pathlib import Path

from stargrad.pipeline.job import STARTED, rule_job, walltime_s

with rule_job(snakemake) as log:
    from stargrad.stages.train import train_model
    from stargrad.tasks import make_task
    train_model(snakemake.input.train, snakemake.input.valid, Path(snakemake.output.params).parent,
                task=make_task(snakemake.wildcards.task, snakemake.params.task_spec),
                model_name=snakemake.wildcards.model, model_spec=snakemake.params.model_spec,
                seed=snakemake.params.seed, code_digest=snakemake.params.code,
                config_digest=snakemake.params.config_hash,
                checkpoint_dir=snakemake.params.checkpoint_dir, walltime_s=walltime_s(snakemake),
                job_start=STARTED,
                run_control=snakemake.config["models"][snakemake.wildcards.model]["train"],
                log=log)

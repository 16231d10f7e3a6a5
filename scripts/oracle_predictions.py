"""Rule oracle: the mock's true forward model fitted to a task's valid and test stars."""
from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.stages.oracle import oracle_predictions
    from stargrad.tasks import make_task
    settings = snakemake.params.settings
    oracle_predictions(snakemake.input.train, snakemake.input.splits, snakemake.output.splits,
                       snakemake.output.calibration,
                       task=make_task(snakemake.wildcards.task, snakemake.params.task_spec),
                       n_iter=settings["n_iter"], n_prototypes=settings["n_prototypes"],
                       bound_margin=settings["bound_margin"], batch_size=settings["batch_size"],
                       config_digest=snakemake.params.config_hash, log=log)

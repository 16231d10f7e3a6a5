"""Rule predict: predict every split of a task's dataset with one trained model."""
from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.stages.predict import predict_splits
    predict_splits(snakemake.params.model_dir, snakemake.input.splits, snakemake.output.splits,
                   mc_samples=snakemake.params.mc_samples, mc_splits=snakemake.params.mc_splits,
                   calibrate=snakemake.params.calibrate,
                   calibration_path=snakemake.output.calibration,
                   seed=snakemake.params.seed,
                   batch_size=snakemake.params.batch_size,
                   config_digest=snakemake.params.config_hash, log=log)

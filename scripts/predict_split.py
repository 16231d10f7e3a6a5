"""Rule predict: predict one split with one trained model."""
from stargrad.pipeline import predict_split
from stargrad.runlog import rule_logger

with rule_logger(snakemake.log[0]) as log:
    predict_split(snakemake.params.model_dir, snakemake.input.split, snakemake.output[0],
                  mc_samples=snakemake.params.mc_samples, seed=snakemake.params.seed,
                  batch_size=snakemake.params.batch_size,
                  config_digest=snakemake.params.config_hash, log=log)

"""Rule catalogue_shard: predict every star of one shard of the survey, streamed in blocks."""
from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.stages.catalogue import predict_shard
    from stargrad.sdss.survey import manifest_skips
    p = snakemake.params
    predict_shard(snakemake.input.allstar, p.survey_root, p.model_dir, snakemake.input.reference,
                  snakemake.input.split, snakemake.output.shard, snakemake.output.quarantine,
                  shard=int(snakemake.wildcards.shard), n_shards=p.n_shards,
                  calibration_path=snakemake.input.calibration, spectra=p.spectra,
                  skip=manifest_skips(f for f in snakemake.input.spectra if f.endswith(".csv")),
                  block_size=p.block_size, mc_samples=p.mc_samples, seed=p.seed,
                  batch_size=p.batch_size, bad_error=p.bad_error,
                  max_bad_fraction=p.max_bad_fraction, log=log)

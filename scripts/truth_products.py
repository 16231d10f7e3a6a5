"""Rule truth_products: Cramér–Rao bounds and efficient-estimator weights of the mock."""
from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.mock.crb import write_truth_products
    write_truth_products(snakemake.params.survey_root, snakemake.input.split, snakemake.input.test,
                         snakemake.output[0], max_stars=snakemake.params.max_stars,
                         seed=snakemake.params.seed, log=log)

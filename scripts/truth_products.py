"""Rule truth_products: Cramér–Rao bounds and efficient-estimator weights of the mock."""
from stargrad.mock import write_truth_products
from stargrad.runlog import rule_logger

with rule_logger(snakemake.log[0]) as log:
    write_truth_products(snakemake.params.survey_root, snakemake.input.split, snakemake.output[0],
                         log=log)

"""Rule compile_dataset: compile every split of a dataset to <split>.fits + quarantine.csv."""
from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.datasets.compile import compile_dataset
    compile_dataset(snakemake.input.split, snakemake.input.allstar, snakemake.input.seismic or None,
                    snakemake.params.survey_root, snakemake.output.splits,
                    snakemake.output.quarantine,
                    manifests=[p for p in snakemake.input.spectra if p.endswith(".csv")],
                    bad_error=snakemake.params.bad_error,
                    max_bad_fraction=snakemake.params.max_bad_fraction,
                    on_bad_file=snakemake.params.on_bad_file,
                    header=snakemake.params.header, spectra=snakemake.params.spectra, log=log)

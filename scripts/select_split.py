"""Rule select_split: apply a dataset's selection to the allStar catalogue and split it."""
from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.provenance import atomic_path
    from stargrad.datasets.select import select_and_split
    from stargrad.sdss.survey import read_allstar
    table = select_and_split(read_allstar(snakemake.input.allstar), snakemake.params.dataset)
    with atomic_path(snakemake.output[0]) as tmp:
        table.to_csv(tmp, index=False)
    log(f"split counts: {table['split'].value_counts().to_dict()}")

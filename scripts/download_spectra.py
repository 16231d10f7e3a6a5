"""Rules download_spectra and download_all_spectra: fetch, verify or quarantine the spectra of
one download chunk, of a dataset's selected stars or of every allStar star."""
from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.sdss.download import download_chunk
    p = snakemake.params
    splits = [snakemake.input.split] if "split" in snakemake.input.keys() else []
    download_chunk(snakemake.input.allstar, splits, int(snakemake.wildcards.chunk),
                   p.n_chunks, p.survey_root, p.base_url, snakemake.output[0], verify=p.verify,
                   retries=p.retries, backoff_s=p.backoff_s, timeout_s=p.timeout_s,
                   on_bad_file=p.on_bad_file, spectra=p.spectra,
                   allow_http=p.allow_http, log=log)

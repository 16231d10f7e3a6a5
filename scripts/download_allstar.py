"""Rule download_allstar: fetch and verify the DR17 allStar catalogue."""
from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.sdss.download import download_allstar
    p = snakemake.params
    download_allstar(p.base_url, snakemake.output[0], sha1=p.sha1, retries=p.retries,
                     backoff_s=p.backoff_s, timeout_s=p.timeout_s, allow_http=p.allow_http,
                     log=log)

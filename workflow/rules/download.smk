# Real SDSS DR17 data: allStar, then each dataset's selected stars' spectra in N_CHUNKS parallel
# jobs (a star shared by two datasets is fetched once; the other job finds it verified). Each job
# verifies against the SAS sha1sum lists, retries, resumes, and lists what it had to quarantine in
# its manifest (read by that dataset's compile_dataset).

SAS = config["survey"]["sas"]
FETCH = dict(retries=SAS["retries"], backoff_s=SAS["backoff_s"], timeout_s=SAS["timeout_s"],
             allow_http=SAS["allow_http"])
# params of both spectrum rules
SPECTRA_FETCH = dict(
    n_chunks=N_CHUNKS,
    spectra=SAS["spectra"],
    base_url=SAS["apstar_base_url"] if SAS["spectra"] == "apStar" else SAS["base_url"],
    verify=SAS["verify"],
    on_bad_file=config["survey"]["on_bad_file"],
    code=code_hash("download_spectra.py"),
    **FETCH,
)


rule download_allstar:
    output:
        ALLSTAR,
    params:
        base_url=SAS["base_url"],
        sha1=SAS["allstar_sha1"],
        **FETCH,
    log:
        f"logs/download/{SURVEY_NAME}/allstar.log",
    localrule: SAS["local_downloads"]
    retries: 2
    conda:
        "../../envs/stargrad.yaml"
    script:
        "../../scripts/download_allstar.py"


# The allStar every later rule reads, checked against survey.sas.allstar_sha1 whether
# download_allstar fetched it or it was placed by hand (Snakemake then never runs that rule).
rule verify_allstar:
    input:
        ALLSTAR,
    output:
        ALLSTAR_VERIFIED,
    params:
        sha1=SAS["allstar_sha1"],
        code=code_hash("verify_allstar.py"),
    log:
        f"logs/download/{SURVEY_NAME}/verify_allstar.log",
    localrule: True
    conda:
        "../../envs/stargrad.yaml"
    script:
        "../../scripts/verify_allstar.py"


rule download_spectra:
    input:
        allstar=ALLSTAR,
        split="results/data/{dataset}/split.csv",
    output:
        f"{SURVEY_ROOT}/manifests/{{dataset}}/chunk{{chunk}}.csv",
    wildcard_constraints:
        chunk=r"\d+",
    params:
        survey_root=lambda wildcards, input: str(Path(input.allstar).parent),
        **SPECTRA_FETCH,
    log:
        f"logs/download/{SURVEY_NAME}/{{dataset}}/chunk{{chunk}}.log",
    benchmark:
        f"benchmarks/download/{SURVEY_NAME}/{{dataset}}/chunk{{chunk}}.tsv"
    localrule: SAS["local_downloads"]
    retries: 1
    resources:
        mem_mb=1000,
        runtime=24 * 60,
    conda:
        "../../envs/stargrad.yaml"
    script:
        "../../scripts/download_spectra.py"


# The spectrum of every allStar star, for the catalogue (survey.sas.fetch_all: true).
rule download_all_spectra:
    input:
        allstar=ALLSTAR,
        verified=ALLSTAR_VERIFIED,
    output:
        f"{SURVEY_ROOT}/manifests/all/chunk{{chunk}}.csv",
    wildcard_constraints:
        chunk=r"\d+",
    params:
        survey_root=lambda wildcards, input: str(Path(input.allstar).parent),
        **SPECTRA_FETCH,
    log:
        f"logs/download/{SURVEY_NAME}/all/chunk{{chunk}}.log",
    benchmark:
        f"benchmarks/download/{SURVEY_NAME}/all/chunk{{chunk}}.tsv"
    localrule: SAS["local_downloads"]
    retries: 1
    resources:
        mem_mb=1000,
        runtime=24 * 60,
    conda:
        "../../envs/stargrad.yaml"
    script:
        "../../scripts/download_spectra.py"

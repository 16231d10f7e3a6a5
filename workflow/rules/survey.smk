# Survey stage: the embedded mock survey, or the real DR17 download rules.
if SURVEY_SOURCE == "mock":

    rule mock_spectra:
        output:
            f"{SURVEY_ROOT}/manifests/mock/shard{{shard}}.csv",
        wildcard_constraints:
            shard=r"\d+",
        params:
            **jax_params("mock_spectra"),
            survey_root=lambda wc, output: str(Path(output[0]).parents[2]),
            mock=MOCK_SETTINGS,
            n_shards=MOCK_SHARDS,
            config_hash=config_digest(("survey",)),
            code=code_hash("mock_spectra.py"),
        log:
            f"logs/survey/{SURVEY_NAME}/shard{{shard}}.log",
        benchmark:
            f"benchmarks/survey/{SURVEY_NAME}/shard{{shard}}.tsv"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=mock_minutes,
        conda:
            environment("mock_spectra")
        script:
            "../../scripts/mock_spectra.py"

    rule mock_survey:
        input:
            expand(f"{SURVEY_ROOT}/manifests/mock/shard{{shard}}.csv", shard=range(MOCK_SHARDS)),
        output:
            allstar=ALLSTAR,
            seismic=f"{SURVEY_ROOT}/seismic.csv",
            truth=f"{SURVEY_ROOT}/truth.fits",
        params:
            **jax_params("mock_survey"),
            mock=MOCK_SETTINGS,
            config_hash=config_digest(("survey",)),
            code=code_hash("mock_survey.py"),
        log:
            f"logs/survey/{SURVEY_NAME}.log",
        benchmark:
            f"benchmarks/survey/{SURVEY_NAME}.tsv"
        threads: 2
        resources:
            mem_mb=4000,
            runtime=10,
        conda:
            environment("mock_survey")
        script:
            "../../scripts/mock_survey.py"

    rule truth_products:
        input:
            split="results/data/{dataset}/split.csv",
            test="results/data/{dataset}/test.fits",
            truth=f"{SURVEY_ROOT}/truth.fits",
        output:
            "results/truth/{dataset}/crb.fits",
        params:
            **jax_params("truth_products"),
            survey_root=lambda wc, input: str(Path(input.truth).parent),
            max_stars=config["attribute"]["max_stars"],
            seed=config["seed"],
            code=code_hash("truth_products.py"),
        log:
            "logs/truth/{dataset}.log",
        benchmark:
            "benchmarks/truth/{dataset}.tsv"
        threads: 2
        resources:
            mem_mb=4000,
            runtime=minutes(10, 0.1),
        conda:
            environment("truth_products")
        script:
            "../../scripts/truth_products.py"

else:

    include: "download.smk"

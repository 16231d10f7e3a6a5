# Catalogue stage: every star of the survey predicted by each model/task of config.catalogue,
# in catalogue.n_shards jobs (a stable hash of APOGEE_ID, as the download chunks) that stream
# spectra in blocks, then one table per model/task with a row per allStar row.
CAT = config["catalogue"]
CAT_SHARDS = range(CAT["n_shards"])
CAT_OUT = "results/catalogue/{model}/{task}"


rule catalogue_reference:
    input:
        model=expand("results/models/{{model}}/{{task}}/{file}", file=MODEL_FILES),
        train=lambda wc: f"results/data/{task_dataset(wc)}/train.fits",
    output:
        f"{CAT_OUT}/reference.npz",
    params:
        **jax_params("catalogue_reference"),
        model_dir=lambda wc, input: str(Path(input.model[0]).parent),
        n_components=CAT["pca_components"],
        quantile=CAT["ood_quantile"],
        code=code_hash("catalogue_reference.py"),
    log:
        "logs/catalogue/{model}/{task}/reference.log",
    benchmark:
        "benchmarks/catalogue/{model}/{task}/reference.tsv"
    threads: 2
    resources:
        mem_mb=memory(1500, 3.0),
        runtime=minutes(10, 0.02),
    conda:
        environment("catalogue_reference")
    script:
        "../../scripts/catalogue_reference.py"


rule catalogue_shard:
    input:
        model=expand("results/models/{{model}}/{{task}}/{file}", file=MODEL_FILES),
        calibration="results/predictions/{model}/{task}/calibration.csv",
        reference=f"{CAT_OUT}/reference.npz",
        split=lambda wc: f"results/data/{task_dataset(wc)}/split.csv",
        allstar=ALLSTAR,
        spectra=catalogue_spectra(),
    output:
        shard=f"{CAT_OUT}/shards/shard{{shard}}.fits",
        quarantine=f"{CAT_OUT}/shards/quarantine{{shard}}.csv",
    wildcard_constraints:
        shard=r"\d+",
    params:
        **jax_params("catalogue_shard"),
        model_dir=lambda wc, input: str(Path(input.model[0]).parent),
        survey_root=lambda wc, input: str(Path(input.allstar).parent),
        n_shards=CAT["n_shards"],
        block_size=CAT["block_size"],
        batch_size=CAT["batch_size"],
        mc_samples=CAT["mc_samples"],
        seed=config["seed"],
        spectra=SPECTRA_KIND,
        bad_error=lambda wc: config["datasets"][task_dataset(wc)]["bad_error"],
        max_bad_fraction=lambda wc: config["datasets"][task_dataset(wc)]["max_bad_fraction"],
        config_hash=lambda wc: model_digest(wc, "catalogue"),
        code=model_code_hash("catalogue_shard.py"),
    log:
        "logs/catalogue/{model}/{task}/shard{shard}.log",
    benchmark:
        "benchmarks/catalogue/{model}/{task}/shard{shard}.tsv"
    threads: 2
    resources:
        **job_resources("catalogue_shard", mem_mb=memory(2000), runtime=catalogue_minutes),
    conda:
        environment("catalogue_shard")
    script:
        "../../scripts/catalogue_shard.py"


rule catalogue:
    input:
        shards=expand(f"{CAT_OUT}/shards/shard{{shard}}.fits", shard=CAT_SHARDS,
                      allow_missing=True),
        quarantine=expand(f"{CAT_OUT}/shards/quarantine{{shard}}.csv", shard=CAT_SHARDS,
                          allow_missing=True),
        allstar=ALLSTAR,
    output:
        table="results/catalogue/{model}/{task}.fits",
        quarantine=f"{CAT_OUT}/quarantine.csv",
        distributions=report(f"{CAT_OUT}/label_distributions.png",
                             caption="../report/catalogue_distributions.rst",
                             category="Catalogue", subcategory="{task}",
                             labels={"model": "{model}", "figure": "label distributions"}),
        uncertainty=report(f"{CAT_OUT}/uncertainty_vs_snr.png",
                           caption="../report/catalogue_uncertainty.rst", category="Catalogue",
                           subcategory="{task}",
                           labels={"model": "{model}", "figure": "uncertainty vs S/N"}),
        flags=report(f"{CAT_OUT}/flags.png", caption="../report/catalogue_flags.rst",
                     category="Catalogue", subcategory="{task}",
                     labels={"model": "{model}", "figure": "flags"}),
    params:
        header=lambda wc: provenance.header_cards(
            model_digest(wc, "catalogue"), config["seed"], model=wc.model, task=wc.task,
            codehash=model_code_hash("catalogue_shard.py")(wc)),
        code=code_hash("catalogue.py"),
    log:
        "logs/catalogue/{model}/{task}/gather.log",
    benchmark:
        "benchmarks/catalogue/{model}/{task}/gather.tsv"
    resources:
        mem_mb=memory(1000, 3.0),
        runtime=minutes(5, 0.01),
    conda:
        environment("catalogue")
    script:
        "../../scripts/catalogue.py"

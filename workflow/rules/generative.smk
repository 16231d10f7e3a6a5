# Generative stage: VAE, autoencoder and PCA of spectra, and GANs, on one task's dataset
# (config `generative:`). The models are trained by the ordinary train rule; these rules only
# analyse them.
GEN = config["generative"]
GEN_TASK = GEN["task"]
GEN_ALL = [m for m, t in model_task_pairs(supervised=False) if t == GEN_TASK]
# Models with an encoder (vae, ae, pca): reconstruction, latent space, anomalies, denoising.
GEN_MODELS = [m for m in GEN_ALL if MODELS[m]["family"] != "gan"]
GAN_MODELS = [m for m in GEN_ALL if MODELS[m]["family"] == "gan"]
# The generative models' family modules: the rules reach them by name at run time.
GEN_FAMILIES = sorted({family_module(m) for m in GEN_MODELS})
SAMPLES = GEN["samples"]
# Models the generative_samples rule reads besides the GANs (None: left out).
SAMPLE_MODELS = {"vae": SAMPLES["vae_model"], "pca": SAMPLES["pca_model"],
                 "labels": SAMPLES["label_model"]}
# Their directories, [] for those left out.
SAMPLE_DIRS = {role: [f"results/models/{m}/{GEN_TASK}"] if m else []
               for role, m in SAMPLE_MODELS.items()}
SAMPLE_FILES = ["results/generative/{task}/samples.csv",
                "results/generative/{task}/samples_lines.png",
                "results/generative/{task}/samples_nearest.png",
                "results/generative/{task}/samples_scores.png"]

GEN_OUT = f"results/generative/{GEN_TASK}"
GEN_TARGETS = (
    [f"{GEN_OUT}/reconstruction.csv"]
    + [f"{GEN_OUT}/prior_samples_{m}.png" for m in GEN_MODELS if MODELS[m]["family"] == "vae"]
    + [f"{GEN_OUT}/latent_space_{m}.png" for m in GEN_MODELS
       if MODELS[m]["family"] in ("vae", "ae")]
    + ([f"{GEN_OUT}/latent_regression_{GEN['latent_model']}.csv"] if GEN["latent_model"] else [])
    + ([f"{GEN_OUT}/anomalies_{GEN['anomaly_model']}.csv"] if GEN["anomaly_model"] else [])
    + ([f"{GEN_OUT}/denoising.csv"] if SURVEY_SOURCE == "mock" else [])
) if GEN_MODELS else []
GEN_TARGETS += [f.format(task=GEN_TASK) for f in SAMPLE_FILES] if GAN_MODELS else []
# called by all_targets() in common.smk
generative_targets = GEN_TARGETS.copy


rule generative_reconstruction:
    wildcard_constraints:
        task=GEN_TASK,
    input:
        params=expand("results/models/{model}/{{task}}/params.npz", model=GEN_MODELS),
        meta=expand("results/models/{model}/{{task}}/{file}", model=GEN_MODELS,
                    file=["model.json", "norm.json"]),
        test=lambda wc: f"results/data/{task_dataset(wc)}/test.fits",
    output:
        table=report("results/generative/{task}/reconstruction.csv",
                     caption="../report/generative_reconstruction.rst", category="Generative",
                     subcategory="{task}", labels={"figure": "reconstruction error table"}),
        plot=report("results/generative/{task}/reconstruction.png",
                    caption="../report/generative_reconstruction.rst", category="Generative",
                    subcategory="{task}", labels={"figure": "reconstruction error vs size"}),
    params:
        **jax_params("generative_reconstruction"),
        model_dirs=lambda wc, input: [str(Path(p).parent) for p in input.params],
        code=code_hash("generative_reconstruction.py", *GEN_FAMILIES),
    log:
        "logs/generative/{task}/reconstruction.log",
    benchmark:
        "benchmarks/generative/{task}/reconstruction.tsv"
    threads: 2
    resources:
        **job_resources("generative_reconstruction", mem_mb=memory(4000, 2.0),
                        runtime=minutes(30, 0.05)),
    conda:
        environment("generative_reconstruction")
    script:
        "../../scripts/generative_reconstruction.py"


rule generative_latent_space:
    input:
        model=expand("results/models/{{model}}/{{task}}/{file}", file=MODEL_FILES),
        split=lambda wc: f"results/data/{task_dataset(wc)}/test.fits",
    output:
        report("results/generative/{task}/latent_space_{model}.png",
               caption="../report/generative_latent_space.rst", category="Generative",
               subcategory="{task}", labels={"figure": "latent space of {model}"}),
    params:
        **jax_params("generative_latent_space"),
        model_dir=lambda wc, input: str(Path(input.model[0]).parent),
        code=code_hash("generative_latent_space.py", *GEN_FAMILIES),
    log:
        "logs/generative/{task}/latent_space_{model}.log",
    threads: 2
    resources:
        **job_resources("generative_latent_space", mem_mb=memory(3000, 2.0),
                        runtime=minutes(15, 0.05)),
    conda:
        environment("generative_latent_space")
    script:
        "../../scripts/generative_latent_space.py"


rule generative_latent_regression:
    input:
        model=expand("results/models/{{model}}/{{task}}/{file}", file=MODEL_FILES),
        train=lambda wc: f"results/data/{task_dataset(wc)}/train.fits",
        test=lambda wc: f"results/data/{task_dataset(wc)}/test.fits",
    output:
        report("results/generative/{task}/latent_regression_{model}.csv",
               caption="../report/generative_latent_regression.rst", category="Generative",
               subcategory="{task}", labels={"figure": "latent regression with {model}"}),
    params:
        **jax_params("generative_latent_regression"),
        model_dir=lambda wc, input: str(Path(input.model[0]).parent),
        labels=GEN["regression_labels"],
        n_labelled=GEN["n_labelled"],
        hidden=GEN["regression_hidden"],
        train_spec=GEN["regression_train"],
        seed=config["seed"],
        code=code_hash("generative_latent_regression.py", *GEN_FAMILIES, "stargrad.models.mlp"),
    log:
        "logs/generative/{task}/latent_regression_{model}.log",
    benchmark:
        "benchmarks/generative/{task}/latent_regression_{model}.tsv"
    threads: 2
    resources:
        **job_resources("generative_latent_regression", mem_mb=memory(4000, 2.0),
                        runtime=minutes(30, 0.05)),
    conda:
        environment("generative_latent_regression")
    script:
        "../../scripts/generative_latent_regression.py"


rule generative_decoder:
    input:
        model=expand("results/models/{{model}}/{{task}}/{file}", file=MODEL_FILES),
        split=lambda wc: f"results/data/{task_dataset(wc)}/test.fits",
    output:
        prior=report("results/generative/{task}/prior_samples_{model}.png",
                     caption="../report/generative_prior.rst", category="Generative",
                     subcategory="{task}", labels={"figure": "prior samples of {model}"}),
        jacobian=report("results/generative/{task}/decoder_jacobian_{model}.png",
                        caption="../report/generative_decoder_jacobian.rst",
                        category="Generative", subcategory="{task}",
                        labels={"figure": "decoder Jacobian of {model}"}),
    params:
        **jax_params("generative_decoder"),
        model_dir=lambda wc, input: str(Path(input.model[0]).parent),
        n_samples=GEN["n_prior_samples"],
        seed=config["seed"],
        code=code_hash("generative_decoder.py", *GEN_FAMILIES),
    log:
        "logs/generative/{task}/decoder_{model}.log",
    threads: 2
    resources:
        **job_resources("generative_decoder", mem_mb=memory(3000, 2.0),
                        runtime=minutes(15, 0.05)),
    conda:
        environment("generative_decoder")
    script:
        "../../scripts/generative_decoder.py"


rule generative_anomalies:
    input:
        model=expand("results/models/{{model}}/{{task}}/{file}", file=MODEL_FILES),
        splits=lambda wc: dataset_split_files(task_dataset(wc)),
        truth=f"{SURVEY_ROOT}/truth.fits" if SURVEY_SOURCE == "mock" else [],
    output:
        table=report("results/generative/{task}/anomalies_{model}.csv",
                     caption="../report/generative_anomalies.rst", category="Generative",
                     subcategory="{task}", labels={"figure": "anomaly ranking ({model})"}),
        plot=report("results/generative/{task}/anomalies_{model}.png",
                    caption="../report/generative_anomalies.rst", category="Generative",
                    subcategory="{task}", labels={"figure": "most anomalous spectra ({model})"}),
    params:
        **jax_params("generative_anomalies"),
        model_dir=lambda wc, input: str(Path(input.model[0]).parent),
        n_shown=GEN["n_anomalies_shown"],
        n_folds=GEN["anomaly_folds"],
        code=code_hash("generative_anomalies.py", *GEN_FAMILIES),
    log:
        "logs/generative/{task}/anomalies_{model}.log",
    benchmark:
        "benchmarks/generative/{task}/anomalies_{model}.tsv"
    threads: 2
    resources:
        **job_resources("generative_anomalies", mem_mb=memory(6000, 2.0),
                        runtime=minutes(30, 0.05)),
    conda:
        environment("generative_anomalies")
    script:
        "../../scripts/generative_anomalies.py"


if SURVEY_SOURCE == "mock":

    rule generative_denoise:
        wildcard_constraints:
            task=GEN_TASK,
        input:
            params=expand("results/models/{model}/{{task}}/params.npz", model=GEN_MODELS),
            meta=expand("results/models/{model}/{{task}}/{file}", model=GEN_MODELS,
                        file=["model.json", "norm.json"]),
            test=lambda wc: f"results/data/{task_dataset(wc)}/test.fits",
            allstar=ALLSTAR,
            truth=f"{SURVEY_ROOT}/truth.fits",
        output:
            table=report("results/generative/{task}/denoising.csv",
                         caption="../report/generative_denoising.rst", category="Generative",
                         subcategory="{task}", labels={"figure": "denoising table"}),
            plots=report(directory("results/generative/{task}/denoising"),
                         patterns=["{model}.png"], caption="../report/generative_denoising.rst",
                         category="Generative", subcategory="{task}",
                         labels={"figure": "denoising example ({model})"}),
        params:
            **jax_params("generative_denoise"),
            model_dirs=lambda wc, input: [str(Path(p).parent) for p in input.params],
            survey_root=lambda wc, input: str(Path(input.allstar).parent),
            code=code_hash("generative_denoise.py", *GEN_FAMILIES),
        log:
            "logs/generative/{task}/denoising.log",
        benchmark:
            "benchmarks/generative/{task}/denoising.tsv"
        threads: 2
        resources:
            **job_resources("generative_denoise", mem_mb=memory(4000, 2.0),
                            runtime=minutes(30, 0.05)),
        conda:
            environment("generative_denoise")
        script:
            "../../scripts/generative_denoise.py"


rule generative_samples:
    wildcard_constraints:
        task=GEN_TASK,
    input:
        gans=expand("results/models/{model}/{{task}}/{file}", model=GAN_MODELS, file=MODEL_FILES),
        others=[f"{d}/{f}" for dirs in SAMPLE_DIRS.values() for d in dirs for f in MODEL_FILES],
        splits=lambda wc: expand("results/data/{dataset}/{split}.fits",
                                 dataset=task_dataset(wc), split=["train", "valid", "test"]),
        allstar=ALLSTAR if SURVEY_SOURCE == "mock" else [],
        truth=f"{SURVEY_ROOT}/truth.fits" if SURVEY_SOURCE == "mock" else [],
    output:
        table=report(SAMPLE_FILES[0], caption="../report/generative_samples.rst",
                     category="Generative", subcategory="{task}",
                     labels={"figure": "generated vs real spectra (table)"}),
        lines=report(SAMPLE_FILES[1], caption="../report/generative_samples_lines.rst",
                     category="Generative", subcategory="{task}",
                     labels={"figure": "line depths, generated vs real"}),
        nearest=report(SAMPLE_FILES[2], caption="../report/generative_samples_nearest.rst",
                       category="Generative", subcategory="{task}",
                       labels={"figure": "nearest training spectra of samples"}),
        scores=report(SAMPLE_FILES[3], caption="../report/generative_samples_scores.rst",
                      category="Generative", subcategory="{task}",
                      labels={"figure": "samples in principal components"}),
    params:
        **jax_params("generative_samples"),
        gan_dirs=[f"results/models/{m}/{GEN_TASK}" for m in GAN_MODELS],
        vae_dir=SAMPLE_DIRS["vae"],
        pca_dir=SAMPLE_DIRS["pca"],
        label_model_dir=SAMPLE_DIRS["labels"],
        survey_root=lambda wc, input: str(Path(input.allstar).parent) if input.allstar else "",
        n_components=SAMPLES["n_components"],
        n_seeds=SAMPLES["n_seeds"],
        line_species=SAMPLES["line_species"],
        seed=config["seed"],
        code=code_hash("generative_samples.py",
                       *sorted({family_module(m) for m in GAN_MODELS}
                               | {family_module(m) for m in SAMPLE_MODELS.values() if m})),
    log:
        "logs/generative/{task}/samples.log",
    benchmark:
        "benchmarks/generative/{task}/samples.tsv"
    threads: 2
    resources:
        **job_resources("generative_samples", mem_mb=memory(4000, 2.0),
                        runtime=minutes(30, 0.05)),
    conda:
        environment("generative_samples")
    script:
        "../../scripts/generative_samples.py"

# Train stage: one job per (model, task); gradient families share stargrad.train.fit.


rule train:
    input:
        train=lambda wc: f"results/data/{task_dataset(wc)}/train.fits",
        valid=lambda wc: f"results/data/{task_dataset(wc)}/valid.fits",
    output:
        params="results/models/{model}/{task}/params.npz",
        model="results/models/{model}/{task}/model.json",
        norm="results/models/{model}/{task}/norm.json",
        history="results/models/{model}/{task}/history.csv",
    params:
        model_spec=lambda wc: {key: MODELS[wc.model][key] for key in MODEL_KEYS},
        task_spec=lambda wc: config["tasks"][wc.task],
        seed=config["seed"],
        config_hash=lambda wc: model_digest(wc),
        code=model_code_hash("train_model.py"),
    log:
        "logs/train/{model}/{task}.log",
    benchmark:
        "benchmarks/train/{model}/{task}.tsv"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=120,
        gpu=1 if config["device"] == "gpu" else 0,
    conda:
        "../../envs/stargrad.yaml"
    script:
        "../../scripts/train_model.py"

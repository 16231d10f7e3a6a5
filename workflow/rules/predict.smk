# Predict stage: values and uncertainties (MC dropout for Bayesian families) per split.


rule predict:
    input:
        params="results/models/{model}/{task}/params.npz",
        model="results/models/{model}/{task}/model.json",
        norm="results/models/{model}/{task}/norm.json",
        split=lambda wc: f"results/data/{task_dataset(wc)}/{wc.split}.fits",
    output:
        "results/predictions/{model}/{task}/{split}.fits",
    params:
        model_dir="results/models/{model}/{task}",
        mc_samples=config["predict"]["mc_samples"],
        batch_size=config["predict"]["batch_size"],
        seed=config["seed"],
        config_hash=CONFIG_HASH,
        code=lambda wc: code_hash("pipeline.py", "mc.py", "dataset.py",
                                  f"models/{MODELS[wc.model]['family']}.py"),
    log:
        "logs/predict/{model}/{task}/{split}.log",
    benchmark:
        "benchmarks/predict/{model}/{task}/{split}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1 if config["device"] == "gpu" else 0,
    conda:
        "../../envs/stargrad.yaml"
    script:
        "../../scripts/predict_split.py"

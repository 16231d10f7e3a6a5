# Compare stage: per task, metrics across models and the figures people look at. Both rules are
# seconds long and run on the submitting host (local rules), not as cluster jobs.


rule compare_task:
    input:
        predictions=lambda wc: expand("results/predictions/{model}/{task}/{split}.fits",
                                      model=models_of_task(wc.task), task=wc.task,
                                      split=task_splits(wc.task)) + oracle_predictions(wc.task),
        crb=lambda wc: f"results/truth/{task_dataset(wc)}/crb.fits" if has_truth(wc.task) else [],
        jacobians=lambda wc: expand("results/attribution/{model}/{task}/jacobian.fits",
                                    model=differentiable_models_of_task(wc.task), task=wc.task),
    output:
        metrics=report("results/compare/{task}/metrics.csv", caption="../report/metrics.rst",
                       category="Compare", subcategory="{task}", labels={"task": "{task}",
                       "figure": "metrics table"}),
        summary=report("results/compare/{task}/summary.png", caption="../report/summary.rst",
                       category="Compare", subcategory="{task}", labels={"task": "{task}",
                       "figure": "summary by label"}),
        scorecard=report("results/compare/{task}/scorecard.csv",
                         caption="../report/scorecard.rst", category="Compare",
                         subcategory="{task}", labels={"task": "{task}", "figure": "scorecard"}),
        ranking=report("results/compare/{task}/ranking.png", caption="../report/ranking.rst",
                       category="Compare", subcategory="{task}", labels={"task": "{task}",
                       "figure": "ranking"}),
        similarity=report("results/compare/{task}/jacobian_similarity.csv",
                          caption="../report/similarity.rst", category="Attribution",
                          subcategory="{task}", labels={"model": "all", "table": "similarity"}),
        comparison_plots=report(directory("results/compare/{task}/jacobian_comparison"),
                                patterns=[f"{{label,{REPORT_LABELS}}}.png"], caption="../report/comparison.rst",
                                category="Attribution", subcategory="{task}",
                                labels={"model": "all models", "label": "{label}"}),
    params:
        task_spec=lambda wc: config["tasks"][wc.task],
        code=code_hash("compare_task.py"),
    log:
        "logs/compare/{task}.log",
    localrule: True
    conda:
        "../../envs/stargrad.yaml"
    script:
        "../../scripts/compare_task.py"


rule plot_pred_vs_true:
    input:
        "results/predictions/{model}/{task}/test.fits",
    output:
        report("results/compare/{task}/pred_vs_true_{model}.png",
               caption="../report/pred_vs_true.rst", category="Compare", subcategory="{task}",
               labels={"task": "{task}", "figure": "predicted vs true: {model}"}),
    params:
        task_spec=lambda wc: config["tasks"][wc.task],
        code=code_hash("plot_pred_vs_true.py"),
    log:
        "logs/compare/{task}/pred_vs_true_{model}.log",
    localrule: True
    conda:
        "../../envs/stargrad.yaml"
    script:
        "../../scripts/plot_pred_vs_true.py"

# stargrad: learn, explain and compare stellar-label models on APOGEE spectra.
# Thin on purpose: config + schema in common.smk, one .smk per stage, logic in src/stargrad/.
import os

from snakemake.utils import min_version

min_version("9.12")


# The default config unless files are given with --configfile (which replace it, so that e.g.
# config/ci.yaml does not inherit the default's models); --config key=value overrides apply on
# top of whichever it is.
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/survey.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/attribute.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/catalogue.smk"
include: "workflow/rules/generative.smk"


rule all:
    default_target: True
    input:
        all_targets(),

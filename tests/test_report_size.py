"""The report stays small enough to mail: figures are saved as palette PNGs with dense curves
drawn without antialiasing (`stargrad.plots.figures.save_figure`), every figure the CI run's report
embeds stays under a size bound, and `stargrad.pipeline.reportsize` measures a report and projects
another config's from it (bench/report_size.py)."""
from __future__ import annotations

import io
import struct

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from stargrad.pipeline import reportsize  # noqa: E402
from stargrad.plots.figures import PNG_COLOURS, save_figure  # noqa: E402

from workflow_jobs import snakemake  # noqa: E402

#: Bound on one embedded figure of the CI run's report (bytes of the PNG). Before palette PNGs
#: the chip-panel Jacobian figures were 160–230 kB.
MAX_FIGURE_BYTES = 100_000


def _png_colour_type(data: bytes) -> int:
    """The IHDR colour type of a PNG (2 RGB, 3 palette, 6 RGBA)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">B", data[25:26])[0]


def _dense_figure(seed: int):
    """A chip-panel-like figure: three panels of a 2,500-point noisy curve, a legend, text."""
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(3, 1, figsize=(12, 8))
    for k, ax in enumerate(axes):
        ax.plot(np.arange(2500), rng.normal(0, 1, 2500).cumsum() * 0.01, lw=0.8,
                color=f"C{k}", label=f"chip {k}")
        ax.axvspan(400, 600, color="gold", alpha=0.35)
        ax.legend()
    fig.suptitle("a dense curve")
    return fig


def test_saved_figures_are_palette_pngs_same_bytes_and_smaller(tmp_path):
    save_figure(_dense_figure(0), tmp_path / "a.png")
    save_figure(_dense_figure(0), tmp_path / "b.png")
    ours = (tmp_path / "a.png").read_bytes()
    assert ours == (tmp_path / "b.png").read_bytes()          # same input, same bytes
    assert _png_colour_type(ours) == 3                          # palette
    plain = io.BytesIO()
    fig = _dense_figure(0)
    fig.savefig(plain, format="png", dpi=90)
    plt.close(fig)
    assert _png_colour_type(plain.getvalue()) == 6              # matplotlib's RGBA
    assert len(ours) * 3 < len(plain.getvalue()), (len(ours), len(plain.getvalue()))
    from PIL import Image
    with Image.open(tmp_path / "a.png") as image, Image.open(plain) as reference:
        assert image.size == reference.size
        assert len(image.getcolors(PNG_COLOURS)) <= PNG_COLOURS
        # the picture is the same up to the palette: few pixels move by more than a shade
        ours_rgb = np.asarray(image.convert("RGB"), float)
        plain_rgb = np.asarray(reference.convert("RGB"), float)
    differs = np.abs(ours_rgb - plain_rgb).max(axis=2) > 64
    assert differs.mean() < 0.02, differs.mean()


def test_vector_figures_are_written_as_they_are(tmp_path):
    save_figure(_dense_figure(1), tmp_path / "a.svg")
    assert (tmp_path / "a.svg").read_text().lstrip().startswith("<?xml")


PLAN = """
rule attribute:
    input: results/models/m/aspcap/params.npz
    output: results/attribution/m/aspcap/jacobian.fits
    jobid: 3
    wildcards: model=m, task=aspcap
    resources: tmpdir=/tmp

localrule compare_task:
    jobid: 4
    wildcards: task=aspcap

rule train:
    jobid: 5
    wildcards: model=m, task=logg
"""


def test_planned_jobs_parse_a_dry_run():
    jobs = reportsize.planned_jobs(PLAN)
    assert jobs.values.tolist() == [["attribute", "aspcap", "model=m, task=aspcap"],
                                    ["compare_task", "aspcap", "task=aspcap"],
                                    ["train", "logg", "model=m, task=logg"]]


@pytest.mark.long
@pytest.mark.workflow
def test_ci_report_figures_are_small_and_its_own_projection_is_exact(run, tmp_path):
    snakemake(run, "--report", "report_size.html")
    report = run / "report_size.html"
    embedded = reportsize.contents(report)
    figures = embedded[embedded["mime"] == "image/png"]
    assert len(figures) >= 50, len(figures)
    too_big = figures[figures["bytes"] > MAX_FIGURE_BYTES]
    assert too_big.empty, too_big[["path", "bytes"]].to_string()
    for path in figures["path"]:
        assert _png_colour_type((run / path).read_bytes()) == 3, path
    total = report.stat().st_size
    print(f"\nCI report: {total / 1e6:.2f} MB, {len(figures)} figures, largest "
          f"{figures['bytes'].max() / 1e3:.0f} kB")
    # the run's own plan, projected from its own report, gives back the report's size
    planned = snakemake(tmp_path / "plan", "-n")
    plan = planned.stdout + planned.stderr
    table = reportsize.project(report, plan)
    assert set(table["rule"]) >= {"attribute", "compare_task", "plot_pred_vs_true", "(fixed)"}
    assert table["files"].sum() == pytest.approx(len(embedded))
    assert table["embedded"].sum() == pytest.approx(len(report.read_text(errors="replace")),
                                                    rel=1e-9)

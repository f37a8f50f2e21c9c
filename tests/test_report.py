"""The HTML report: file-name parsing, metrics table, self-contained page."""

import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from conftest import smooth_images
from fmrirecon.evaluation import evaluate, write_evaluation
from fmrirecon.images import save_grid
from fmrirecon.report import (
    METRIC_COLUMNS,
    build_report,
    collect_metrics,
    index_by_name,
    parse_name,
    write_metrics_table,
)

SUBJECTS, METHODS = ("01", "02"), ("pca", "vdvae")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Summaries and grids of two subjects x two methods (test split) + one imagery."""
    root = tmp_path_factory.mktemp("derivatives")
    true = smooth_images(8, size=10)
    summaries, grids = [], []
    keys = [(s, m, "test") for s in SUBJECTS for m in METHODS] + [("01", "pca", "imagery")]
    for k, (subject, method, split) in enumerate(keys):
        rng = np.random.default_rng(k)
        recon = np.clip(true + (0.1 + 0.2 * k) * rng.standard_normal(true.shape), 0, 1)
        per_image, summary = evaluate(recon, true, [f"{i}.png" for i in range(8)],
                                      n_way=(2, 5), n_boot=200, seed=k)
        stem = f"sub-{subject}_desc-{method}{split}"
        folder = root / f"sub-{subject}"
        write_evaluation(per_image, summary, folder / "eval" / f"{stem}_metrics.tsv",
                         folder / "eval" / f"{stem}_summary.json")
        folder.joinpath("recon").mkdir(exist_ok=True)
        grid = folder / "recon" / f"{stem}_recon.png"
        save_grid(grid, [true, recon])
        summaries.append(folder / "eval" / f"{stem}_summary.json")
        grids.append(grid)
    return summaries, grids


@pytest.mark.parametrize("name, expected", [
    ("sub-01_desc-pcatest_summary.json", ("01", "pca", "test")),
    ("sub-02_desc-vdvaeimagery_summary.json", ("02", "vdvae", "imagery")),
    ("sub-CSI1_desc-brain2test_recon.png", ("CSI1", "brain2", "test")),
    ("sub-01_desc-latesttest_summary.json", ("01", "latest", "test")),
])
def test_parse_name(name, expected):
    got = parse_name(f"/some/dir/sub-x/{name}")
    assert got == dict(zip(("subject", "method", "split"), expected))


@pytest.mark.parametrize("name", [
    "sub-01_desc-pca_summary.json",        # no split
    "sub-01_desc-test_summary.json",       # no method
    "sub-01_desc-PCAtest_summary.json",    # method not lowercase
    "01_desc-pcatest_summary.json",        # no sub- prefix
    "sub-01_desc-pcatrain_summary.json",   # unknown split
    "sub-01_desc-pca-xtest_summary.json",  # non-alphanumeric method
])
def test_parse_name_rejects(name):
    with pytest.raises(ValueError, match=re.escape(name)):
        parse_name(name)


def test_collect_metrics(outputs, tmp_path):
    summaries, _ = outputs
    table = collect_metrics(summaries)
    assert list(table.columns) == METRIC_COLUMNS
    # 5 summaries x (pixcorr, ssim, ident2, 2-way, 5-way)
    assert len(table) == 25
    assert set(table["subject"]) == set(SUBJECTS) and set(table["method"]) == set(METHODS)
    nway = table[table["metric"] == "nway"]
    assert sorted(nway["n"].unique()) == [2, 5]
    assert table.loc[table["metric"] != "nway", "n"].isna().all()
    np.testing.assert_allclose(nway["chance"], 1 / nway["n"].astype(float))
    # PixCorr and SSIM: chance is each method's shuffled baseline, not 0 or n/a
    assert table.loc[table["metric"].isin(["pixcorr", "ssim"]), "chance"].notna().all()
    assert (table.loc[table["metric"] == "ident2", "chance"] == 0.5).all()
    assert (table["ci_low"] <= table["mean"]).all() and (table["mean"] <= table["ci_high"]).all()

    path = tmp_path / "report" / "metrics.tsv"
    write_metrics_table(table, path)
    back = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False,
                       dtype={"subject": str})
    assert back.columns.tolist() == METRIC_COLUMNS and len(back) == 25
    np.testing.assert_allclose(back["mean"], table["mean"])


def test_collect_metrics_rejects_bad_name(outputs, tmp_path):
    summaries, _ = outputs
    bad = tmp_path / "sub-01_desc-pca_summary.json"
    bad.write_text(summaries[0].read_text())
    with pytest.raises(ValueError, match="sub-01_desc-pca_summary.json"):
        collect_metrics([*summaries, bad])


def test_build_report(outputs, tmp_path):
    summaries, grids = outputs
    metrics = collect_metrics(summaries)
    pngs = index_by_name(grids)
    expected = {(s, m, "test") for s in SUBJECTS for m in METHODS} | {("01", "pca", "imagery")}
    assert set(pngs) == expected
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    extra = [
        {"title": "Trusted <html>", "html": "<p class='mine'>voxel maps</p>"},
        {"title": "A figure", "figure": fig},
        {"title": "A table", "table": pd.DataFrame({"roi": ["V1 <b>"], "r": [0.4]})},
    ]
    config = {"seed": 0, "evaluation": {"n_way": (2, 5)}, "results_dir": tmp_path}
    out = build_report(metrics, pngs, config, tmp_path / "report" / "index.html",
                       extra_sections=extra, title="Report <script>")
    html = out.read_text()
    for subject in SUBJECTS:
        assert f"sub-{subject}" in html
    for method in METHODS:
        assert method in html
    assert "imagery" in html
    assert 'id="identification"' in html and 'id="reconstructions"' in html
    # chance levels in the summary table: 0.5 for 2-way, 0.2 for 5-way
    chance_row = re.search(r'<tr class="chance">(.*?)</tr>', html, re.S).group(1)
    assert re.findall(r"<td>(.*?)</td>", chance_row)[2:] == ["0.500", "0.500", "0.200"]
    # figures and the 5 grids embedded, nothing fetched from outside
    images = re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', html)
    assert len(images) >= 5 + 4 + 1  # grids + bars/curves per split + extra figure
    assert "http://" not in html and "https://" not in html
    assert re.search(r'src="(?!data:)', html) is None
    # text escaped, trusted html kept, config shown as YAML
    assert "Report &lt;script&gt;" in html and "<script>" not in html
    assert "<p class='mine'>voxel maps</p>" in html
    assert "V1 &lt;b&gt;" in html
    assert "n_way:" in html and "- 5" in html


def test_build_report_checks_extra_sections(outputs, tmp_path):
    summaries, grids = outputs
    metrics = collect_metrics(summaries)
    with pytest.raises(ValueError, match="exactly one"):
        build_report(metrics, {}, {}, tmp_path / "x.html",
                     extra_sections=[{"title": "t", "html": "a", "table": pd.DataFrame()}])
    with pytest.raises(FileNotFoundError):
        build_report(metrics, {("01", "pca", "test"): tmp_path / "missing.png"}, {},
                     tmp_path / "x.html")


def test_training_curves_section_plots_iterative_methods_only(tmp_path):
    from fmrirecon.report import training_curves_section

    empty = tmp_path / "sub-01_desc-pca_curves.tsv"
    empty.write_text("epoch\n")
    assert training_curves_section([empty]) is None
    curves = tmp_path / "sub-01_desc-selfsup_curves.tsv"
    curves.write_text("phase\tepoch\tpixel\n" + "".join(f"decoder\t{e}\t{1 / (e + 1)}\n" for e in range(5)))
    section = training_curves_section([empty, curves])
    assert section["title"] == "Training curves"
    assert [ax.get_title() for ax in section["figure"].axes] == ["sub-01 selfsup"]
    with pytest.raises(ValueError, match="bad.tsv"):
        (tmp_path / "bad.tsv").write_text("epoch\tx\n1\t2\n")
        training_curves_section([tmp_path / "bad.tsv"])


def test_training_curves_section_adds_named_models_without_wall_time(tmp_path):
    from fmrirecon.report import training_curves_section

    generator = tmp_path / "generator_curves.tsv"
    generator.write_text("epoch\tpixel\tkl\tseconds\n" + "".join(f"{e}\t{1 / e}\t{e}\t{9.5 * e}\n" for e in range(1, 4)))
    section = training_curves_section([], {"generator (VAE-GAN)": generator})
    (ax,) = section["figure"].axes
    assert ax.get_title() == "generator (VAE-GAN)"
    assert sorted(line.get_label() for line in ax.get_lines()) == ["kl", "pixel"]


def test_resources_section_sums_the_benchmark_files(tmp_path):
    from fmrirecon.report import resources_section

    assert resources_section(tmp_path) is None
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for name, s, rss in (("glm/sub-01.tsv", 10.0, 500.0), ("glm/sub-02.tsv", 30.0, 700.0),
                         ("train_generator.tsv", 5.0, "-")):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(header + f"{s}\t0:00:10\t{rss}\t1\t1\t1\t0\t0\t50\t9\n")
    table = resources_section(tmp_path)["table"].set_index("rule")
    assert table.loc["glm", "jobs"] == 2 and table.loc["glm", "total_s"] == 40.0
    assert table.loc["glm", "longest_s"] == 30.0 and table.loc["glm", "peak_rss_mb"] == 700.0
    assert table.index[0] == "glm" and np.isnan(table.loc["train_generator", "peak_rss_mb"])
    (tmp_path / "bad.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="bad.tsv: not a Snakemake benchmark file"):
        resources_section(tmp_path)

"""The HTML report: records in, baselines beside every number, the field's table,
gallery, provenance, a self-contained page."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from conftest import smooth_images
from fmrirecon.evaluation import evaluate, write_evaluation
from fmrirecon.report import (
    METRIC_COLUMNS,
    across_subjects,
    build_report,
    collect_metrics,
    config_diff,
    gallery,
    provenance,
    validation_rows,
    write_metrics_table,
)

SUBJECTS, METHODS = ("01", "02"), ("pca", "vdvae")


def write_outputs(root, true, train, keys, n=8, order=None):
    """Evaluation files of each (subject, method, split); records with arbitrary names."""
    records = []
    stims = np.array([f"img{i:02d}.png" for i in range(n)])
    for k, (subject, method, split) in enumerate(keys):
        rng = np.random.default_rng(k)
        recon = np.clip(true + (0.1 + 0.2 * k) * rng.standard_normal(true.shape), 0, 1).astype(np.float32)
        idx = np.arange(n) if order is None else order(subject)
        per_image, summary = evaluate(recon[idx], true[idx], stims[idx], n_way=(2, 5), n_boot=200,
                                      seed=k, train_images=train,
                                      train_stim_files=[f"train{i}.png" for i in range(len(train))])
        # names that no pattern could parse: the report takes records, not names
        folder = root / f"job{k}"
        folder.mkdir(parents=True)
        write_evaluation(per_image, summary, folder / "m.tsv", folder / "s.json")
        np.savez(folder / "r.npz", images=recon[idx], true=true[idx], stim_file=stims[idx])
        records.append({"subject": subject, "method": method, "split": split, "summary": str(folder / "s.json"),
                        "metrics": str(folder / "m.tsv"), "recon": str(folder / "r.npz")})
    return records


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Two subjects x two methods (test split) + one imagery, with baselines."""
    root = tmp_path_factory.mktemp("derivatives")
    true = smooth_images(8, size=10)
    train = smooth_images(30, size=10, seed=5)
    keys = [(s, m, "test") for s in SUBJECTS for m in METHODS] + [("01", "pca", "imagery")]
    # sub-02's files list the images in another order: the gallery must not follow it
    order = lambda s: np.arange(8) if s == "01" else np.arange(8)[::-1]  # noqa: E731
    return write_outputs(root, true, train, keys, order=order)


def test_collect_metrics_has_baselines_beside_every_metric(outputs, tmp_path):
    table = collect_metrics(outputs)
    assert list(table.columns) == METRIC_COLUMNS
    own = table[table["baseline"].isna()]
    # 5 summaries x (pixcorr, ssim, ident2, 2-way, 5-way)
    assert len(own) == 25
    assert set(own["subject"]) == set(SUBJECTS) and set(own["method"]) == set(METHODS)
    assert (own["size"] == 10).all() or own.loc[own["metric"] != "nway", "size"].eq(10).all()
    for (s, m, sp, metric, n), rows in table.groupby(["subject", "method", "split", "metric", "n"], dropna=False):
        baselines = set(rows["baseline"].dropna())
        expected = {"mean_image", "retrieval"} | ({"shuffled"} if metric in ("pixcorr", "ssim") else set())
        assert baselines == expected, (s, m, metric, n)
    # chance of PixCorr is the shuffled baseline, not 0 (the old defect)
    pix = table[(table["metric"] == "pixcorr")]
    shuffled = pix[pix["baseline"] == "shuffled"].set_index(["subject", "method", "split"])["mean"]
    chance = pix[pix["baseline"].isna()].set_index(["subject", "method", "split"])["chance"]
    pd.testing.assert_series_equal(chance.sort_index(), shuffled.sort_index(), check_names=False)
    assert (chance != 0).all()
    nway = own[own["metric"] == "nway"]
    np.testing.assert_allclose(nway["chance"], 1 / nway["n"].astype(float))

    path = tmp_path / "report" / "metrics.tsv"
    write_metrics_table(table, path)
    back = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False, dtype={"subject": str})
    assert back.columns.tolist() == METRIC_COLUMNS and len(back) == len(table)
    np.testing.assert_allclose(back["mean"], table["mean"])


def test_collect_metrics_rejects_two_files_for_one_evaluation(outputs):
    twice = [*outputs, {**outputs[0], "summary": outputs[1]["summary"]}]
    with pytest.raises(ValueError, match="describe the same"):
        collect_metrics(twice)
    with pytest.raises(ValueError, match="no split"):
        collect_metrics([{k: v for k, v in outputs[0].items() if k != "split"}])


def test_across_subjects_is_the_mean_of_subject_means_with_a_stratified_interval():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.2, 0.1, 50), rng.normal(0.6, 0.1, 10)
    entry = across_subjects({"01": a, "02": b}, n_boot=2000, seed=1)
    # the mean of the subjects' means, not the pooled mean (which 01's 50 images would dominate)
    assert entry["mean"] == pytest.approx((a.mean() + b.mean()) / 2)
    assert entry["ci_low"] < entry["mean"] < entry["ci_high"] and entry["n_subjects"] == 2
    # its width comes from the images: ten times the images, about a third of the width
    wide = across_subjects({"01": a[:10], "02": b}, seed=1)
    assert wide["ci_high"] - wide["ci_low"] > entry["ci_high"] - entry["ci_low"]
    assert np.isnan(across_subjects({"01": np.array([np.nan])})["mean"])


def test_build_report(outputs, tmp_path):
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    extra = [
        {"title": "Trusted <html>", "html": "<p class='mine'>voxel maps</p>"},
        {"title": "A figure", "figure": fig},
        {"title": "A table", "table": pd.DataFrame({"roi": ["V1 <b>"], "r": [0.4]})},
    ]
    config = {"seed": 0, "evaluation": {"n_boot": 200}, "report": {"gallery_columns": 4}}
    out = build_report(outputs, config, tmp_path / "report" / "index.html",
                       extra_sections=extra, title="Report <script>")
    html = out.read_text()
    for subject in SUBJECTS:
        assert f"sub-{subject}" in html
    for method in METHODS:
        assert method in html
    assert "imagery" in html
    assert 'id="identification"' in html and 'id="reconstructions"' in html
    # the summary across subjects comes first
    assert html.index('id="summary"') < html.index('id="metrics"') < html.index('id="reconstructions"')
    # headers say the distance and the resolution; 2-way by draws (a near duplicate) is gone
    headers = re.findall(r"<th>(.*?)</th>", html)
    assert "PixCorr ↑ (pixel r, 10 px)" in headers and "2-way ident. ↑ (exhaustive, pixel r, 10 px)" in headers
    assert "5-way ident. ↑ (pixel r, 10 px)" in headers and "2-way ident. ↑ (pixel r, 10 px)" not in headers
    # under every method row, its three baselines
    body = html[html.index('id="metrics"'):html.index('id="reconstructions"')]
    n_methods = len(re.findall(r'<tr class="method">', body))
    assert n_methods == 5
    for label in ("mean training image", "retrieval (nearest training image)", "shuffled pairs (wrong images)"):
        assert body.count(f'<td class="key label">{label}</td>') == n_methods
    # chance: 0.5 for 2-way, 0.2 for 5-way; PixCorr's and SSIM's are the shuffled pairs
    chance_row = re.search(r'<tr class="chance">(.*?)</tr>', body, re.S).group(1)
    assert re.findall(r"<td>(.*?)</td>", chance_row) == ["shuffled pairs, per method"] * 2 + ["0.500", "0.200"]
    # figures and every gallery tile embedded, nothing fetched from outside
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', html)) >= 2 * 8 * 3 + 8 * 2 + 3
    assert "http://" not in html and "https://" not in html
    assert re.search(r'src="(?!data:)', html) is None
    # text escaped, trusted html kept
    assert "Report &lt;script&gt;" in html and "<script>" not in html
    assert "<p class='mine'>voxel maps</p>" in html
    assert "V1 &lt;b&gt;" in html


def test_build_report_checks_its_records(outputs, tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        build_report(outputs, {}, tmp_path / "x.html",
                     extra_sections=[{"title": "t", "html": "a", "table": pd.DataFrame()}])
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        build_report([{**outputs[0], "recon": str(tmp_path / "missing.npz")}], {}, tmp_path / "x.html")


def test_gallery_same_images_same_order_with_scores(outputs):
    grids = gallery(outputs, columns=4, all_max=60)
    tests = [g for g in grids if g["split"] == "test"]
    assert [g["subject"] for g in tests] == ["sub-01", "sub-02"]
    for g in tests:
        names = [t["caption"] for b in g["blocks"] for t in b["rows"][0]["tiles"]]
        assert names == [f"img{i:02d}.png" for i in range(8)]  # sorted, whatever the file's order
        assert [r["label"] for r in g["blocks"][0]["rows"] if r["kind"] == "method"] == list(METHODS)
        # each tile's PixCorr beside it, its SSIM and identification on hover
        method_row = next(r for r in g["blocks"][0]["rows"] if r["kind"] == "method")
        assert all(re.fullmatch(r"r -?\d\.\d\d", t["caption"]) for t in method_row["tiles"])
        assert "SSIM" in method_row["tiles"][0]["title"] and "2-way" in method_row["tiles"][0]["title"]
    # the scores are the image's own: sub-02's file lists images in reverse order
    sub2 = pd.read_csv(outputs[2]["metrics"], sep="\t").set_index("stim_file")
    tile = next(r for r in tests[1]["blocks"][0]["rows"] if r["label"] == "pca")["tiles"][0]
    assert tile["caption"] == f"r {sub2.loc['img00.png', 'pixcorr']:.2f}"


def test_gallery_scales_with_a_selection_and_every_image_collapsed(tmp_path):
    true = smooth_images(30, size=8)
    records = write_outputs(tmp_path, true, smooth_images(10, size=8, seed=3),
                            [("01", "pca", "test"), ("01", "ridge", "test")], n=30)
    (g,) = gallery(records, columns=5, all_max=12)
    assert [b["title"] for b in g["blocks"]] == ["best by PixCorr (mean over methods)", "median by PixCorr",
                                                 "worst by PixCorr"]
    pix = np.mean([pd.read_csv(r["metrics"], sep="\t").set_index("stim_file")["pixcorr"] for r in records], axis=0)
    best = {t["caption"] for t in g["blocks"][0]["rows"][0]["tiles"]}
    worst = {t["caption"] for t in g["blocks"][2]["rows"][0]["tiles"]}
    names = np.array([f"img{i:02d}.png" for i in range(30)])
    assert best == set(names[np.argsort(-pix)[:5]]) and worst == set(names[np.argsort(-pix)[-5:]])
    assert sum(len(b["rows"][0]["tiles"]) for b in g["hidden"]) == 30


def test_flat_reconstructions_are_explained_and_shown_stretched(tmp_path):
    true = smooth_images(6, size=8)
    records = write_outputs(tmp_path, true, smooth_images(10, size=8, seed=3), [("01", "pca", "test")], n=6)
    data = dict(np.load(records[0]["recon"]))
    data["images"] = 0.5 + 0.1 * (data["true"] - 0.5)  # a tenth of the contrast
    np.savez(records[0]["recon"], **data)
    (g,) = gallery(records)
    (note,) = g["notes"]
    assert note["ratio"] == pytest.approx(0.1, rel=0.05)
    assert [r["kind"] for r in g["blocks"][0]["rows"]] == ["truth", "method", "stretched"]
    html = build_report(records, {}, tmp_path / "index.html").read_text()
    assert "Why pca looks grey" in html and "10% of the shown images' pixel contrast" in html


def test_field_table_says_no_weights_and_never_a_value(outputs, tmp_path):
    summary = {"metrics": {"pixcorr": {"size": 425}, "alexnet2": {"size": 256}},
               "networks": {"alexnet": {"found": False, "path": "/x/alexnet.pth", "weights": "w"}},
               "methods": {"pca": {"pixcorr": {
                   "mean": 0.3, "ci_low": 0.2, "ci_high": 0.4, "chance": 0.1,
                   "baselines": {"mean_image": {"mean": 0.2, "ci_low": 0.1, "ci_high": 0.3}}}}}}
    path = tmp_path / "field.json"
    path.write_text(json.dumps(summary))
    field = [{"subject": "01", "split": "test", "summary": str(path)}]
    table = collect_metrics(outputs, field)
    assert set(table.loc[table["metric"].str.endswith("_field"), "metric"]) == {"pixcorr_field"}
    assert (table.loc[table["metric"] == "pixcorr_field", "size"] == 425).all()
    html = build_report(outputs, {"evaluation": {"n_boot": 200}}, tmp_path / "index.html", field=field).read_text()
    section = html[html.index('id="field"'):html.index('id="identification"')]
    assert section.count("no weights</td>") >= 6  # AlexNet(2), (5), Inception, CLIP, EffNet-B, SwAV
    assert "AlexNet(2) ↑ (2-way, features.4, 256 px)" in section
    assert "SwAV ↓ (corr. distance, avgpool, 224 px)" in section
    assert "no weights for alexnet" in html  # and a warning says so at the top


def test_provenance_header(outputs, tmp_path):
    betas = tmp_path / "betas.mat"
    betas.write_bytes(b"0123456789")
    run_info = tmp_path / "run.json"
    run_info.write_text(json.dumps({"command": "snakemake --cores 2 --configfile x.yaml", "started": "then"}))
    config = {"seed": 1, "evaluation": {"n_boot": 200, "n_way": [2, 5]}, "report": {"title": "t"}}
    defaults = {"seed": 0, "evaluation": {"n_boot": 2000, "n_way": [2, 5]}, "report": {"title": "t"}}
    info = provenance({"entry": "betas", "input": str(betas), "dataset": "miyawaki", "methods": {"pca": "pca"},
                       "subjects": ["01"], "splits": ["test"]}, config, defaults, run_info, repository=tmp_path)
    assert info["checksum"] == "84d89877f0d4041efb6bf91a16f0248f2fd573e6af05c19f96bedb9f882f7882"
    assert info["command"] == "snakemake --cores 2 --configfile x.yaml"
    assert info["commit"].startswith("fmrirecon ")  # not a git checkout
    assert "no preprocessing, no GLM" in info["ran_text"]
    assert info["versions"]["numpy"] == np.__version__
    assert [d["key"] for d in info["config_diff"]] == ["evaluation.n_boot", "seed"]
    html = build_report(outputs, config, tmp_path / "index.html", provenance_info=info).read_text()
    assert "84d89877f0d4" in html and "snakemake --cores 2 --configfile x.yaml" in html
    assert "2 setting(s) differ from the defaults" in html
    assert re.search(r"<details><summary>Configuration", html)  # collapsed


def test_config_diff_lists_only_what_differs():
    diff = config_diff({"a": 1, "b": {"c": [1, 2], "d": "x"}, "e": None},
                       {"a": 1, "b": {"c": [1, 3], "d": "x"}, "e": None, "f": 2})
    assert diff == [{"key": "b.c", "value": "[1, 2]", "default": "[1, 3]"},
                    {"key": "f", "value": "(absent)", "default": "2"}]


def test_training_curves_section_plots_iterative_methods_only(tmp_path):
    from fmrirecon.report import training_curves_section

    empty = tmp_path / "a.tsv"
    empty.write_text("epoch\n")
    assert training_curves_section([{"label": "sub-01 pca", "curves": empty}]) is None
    curves = tmp_path / "b.tsv"
    curves.write_text("phase\tepoch\tpixel\n" + "".join(f"decoder\t{e}\t{1 / (e + 1)}\n" for e in range(5)))
    section = training_curves_section([{"label": "sub-01 pca", "curves": empty},
                                       {"label": "sub-01 selfsup", "curves": curves}])
    assert section["title"] == "Training curves"
    assert [ax.get_title() for ax in section["figure"].axes if ax.get_visible()] == ["sub-01 selfsup"]
    with pytest.raises(ValueError, match="no label"):
        training_curves_section([{"curves": curves}])


def test_training_curves_section_adds_named_models_without_wall_time(tmp_path):
    from fmrirecon.report import training_curves_section

    generator = tmp_path / "generator_curves.tsv"
    generator.write_text("epoch\tpixel\tkl\tseconds\n"
                         + "".join(f"{e}\t{1 / e}\t{e}\t{9.5 * e}\n" for e in range(1, 4)))
    section = training_curves_section([{"label": "generator (VAE-GAN)", "curves": generator}])
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
    table = resources_section(tmp_path)["table"].set_index("stage (rule)")
    assert table.loc["glm", "jobs"] == 2 and table.loc["glm", "total wall time (s)"] == 40.0
    assert table.loc["glm", "longest job (s)"] == 30.0 and table.loc["glm", "peak memory of a job (MB)"] == 700.0
    assert table.index[0] == "glm" and np.isnan(table.loc["train_generator", "peak memory of a job (MB)"])
    # a totals row
    assert table.index[-1] == "all stages" and table.loc["all stages", "total wall time (s)"] == 45.0
    assert table.loc["all stages", "jobs"] == 3
    (tmp_path / "bad.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="bad.tsv: not a Snakemake benchmark file"):
        resources_section(tmp_path)


@pytest.mark.slow
def test_field_table_has_a_mean_over_subjects(outputs, tmp_path, monkeypatch):
    from fmrirecon.evaluation import _nan_to_none
    from fmrirecon.perceptual_metrics import field_metrics

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no weights: pixel metrics only
    monkeypatch.setenv("HOME", str(tmp_path))
    field, means = [], []
    for k, subject in enumerate(SUBJECTS):
        data = np.load(outputs[2 * k]["recon"])
        per_image, summary = field_metrics({"pca": data["images"]}, data["true"], data["stim_file"],
                                           train_images=smooth_images(30, size=10, seed=5), n_boot=100)
        per_image.to_csv(tmp_path / f"{subject}.tsv", sep="\t", index=False, na_rep="n/a")
        (tmp_path / f"{subject}.json").write_text(json.dumps(_nan_to_none(summary)))
        field.append({"subject": subject, "split": "test", "summary": str(tmp_path / f"{subject}.json"),
                      "metrics": str(tmp_path / f"{subject}.tsv")})
        means.append(summary["methods"]["pca"]["pixcorr"]["mean"])
    html = build_report(outputs, {"evaluation": {"n_boot": 200}}, tmp_path / "index.html", field=field).read_text()
    section = html[html.index('id="field"'):html.index('id="identification"')]
    row = re.search(r'<td class="key">2 subjects</td><td class="key label">pca</td>\s*<td class="">(.*?)<span', section)
    assert row and float(row.group(1)) == pytest.approx(np.mean(means), abs=5e-4)


GUARD_NOTE = ("the pca baseline scored 0.847 >= 0.757 pixcorr on the validation pairs and the full model is not "
              "clearly better on ident2: this entry fits and draws with the pca baseline")


def validation_record(folder, subject, method, data):
    """A validation JSON as fit_validated writes it, and its record."""
    path = folder / f"v_{subject}_{method}.json"
    path.write_text(json.dumps(data))
    return {"subject": subject, "method": method, "validation": str(path)}


def _entry(settings, role, pixcorr, ident2, n=20):
    return {"settings": settings, "role": role, "pixcorr": pixcorr, "ident2": ident2,
            "pixcorr_per_image": [pixcorr] * n, "ident2_per_image": [ident2] * n}


def _validated(entries, chosen, fallback=None, notes=(), fit_notes=(), search=None):
    return {"enabled": True, "metric": "pixcorr", "held_out": "images", "folds": 5,
            "n_fit_pairs": [89, 77, 89, 80, 93], "n_validation_images": 20, "search": search or {},
            "entries": entries, "chosen": chosen, "fallback": fallback, "notes": list(notes),
            "validation_fit_notes": list(fit_notes)}


SELFSUP = _validated(
    [_entry({}, "candidate", 0.740, 0.834), _entry({"cycles": False}, "ablation", 0.757, 0.861),
     _entry({}, "baseline pca", 0.847, 0.882)],
    {"role": "baseline pca", "settings": {}}, "baseline pca",
    notes=["the ablation (cycles=False) scored 0.757 >= 0.740 pixcorr on the validation pairs and the full model "
           "is not clearly better on ident2: the ablation is used", GUARD_NOTE],
    fit_notes=["selfsup: the encoder does not beat the mean predictor on held-out pairs: cycles turned off"])
PCA = _validated([_entry({"n_components": k}, "candidate", 0.7 + k / 1000, 0.8) for k in (5, 20, 50)],
                 {"role": "candidate", "settings": {"n_components": 50}}, search={"n_components": [5, 20, 50]})


def test_validation_rows_name_the_fallback_and_why(tmp_path):
    rows = validation_rows(validation_record(tmp_path, "01", "selfsup", SELFSUP))
    entries = [r for r in rows if r["kind"] == "entry"]
    assert [(r["role"], r["settings"]) for r in entries] == [
        ("candidate", "as configured"), ("own ablation", "cycles=False"), ("pca baseline", "—")]
    assert [r["pixcorr"] for r in entries] == ["0.740", "0.757", "0.847"]
    assert [r["ident2"] for r in entries] == ["0.834", "0.861", "0.882"]
    assert [r["chosen"] for r in entries] == [False, False, True]
    # what was held out: training images, in folds; never the test split
    assert entries[0]["held_out"] == ("20 training images scored (images held out in 5 folds, with their "
                                      "repetitions); fitted on 77–93 pairs per fold")
    (outcome,) = [r for r in rows if r["kind"] == "outcome"]
    assert outcome["fallback"] == "baseline pca"
    assert outcome["text"] == "fell back to the pca baseline: the test rows of selfsup are this model's"
    assert outcome["reasons"][-1] == GUARD_NOTE and "the ablation is used" in outcome["reasons"][0]
    assert outcome["fit_notes"] == SELFSUP["validation_fit_notes"]
    # no per-image list reaches the rows
    assert not any("per_image" in key for r in rows for key in r)

    ablation = {**SELFSUP, "entries": SELFSUP["entries"][:2], "chosen": {"role": "ablation",
                "settings": {"cycles": False}}, "fallback": "ablation", "notes": SELFSUP["notes"][:1]}
    rows = validation_rows(validation_record(tmp_path, "01", "selfsup", ablation))
    assert rows[-1]["text"].startswith("fell back to its own ablation (cycles=False)")
    assert [r["chosen"] for r in rows if r["kind"] == "entry"] == [False, True]


def test_validation_rows_of_a_kept_choice_and_of_disabled_validation(tmp_path):
    rows = validation_rows(validation_record(tmp_path, "02", "pca", PCA))
    assert [r["chosen"] for r in rows[:-1]] == [False, False, True]
    assert rows[-1] == {"subject": "sub-02", "method": "pca", "kind": "outcome", "fallback": None,
                        "text": "kept n_components=50, the best pixcorr of 3 candidates", "reasons": [],
                        "fit_notes": []}
    ridge = _validated([_entry({}, "candidate", 0.85, 0.89), _entry({}, "baseline pca", 0.84, 0.88)],
                       {"role": "candidate", "settings": {}})
    rows = validation_rows(validation_record(tmp_path, "02", "ridge", ridge))
    assert [r["chosen"] for r in rows[:-1]] == [True, False]  # same settings, told apart by role
    assert rows[-1]["text"] == "kept as configured; the pca baseline did not replace it"
    (row,) = validation_rows(validation_record(tmp_path, "02", "pcafixed", {"enabled": False}))
    assert row["kind"] == "disabled" and row["text"].startswith("validation disabled")
    with pytest.raises(ValueError, match="no validation"):
        validation_rows({"subject": "01", "method": "pca"})


def test_build_report_shows_model_selection_near_the_metrics(outputs, tmp_path):
    validation = [validation_record(tmp_path, "01", "pca", PCA), validation_record(tmp_path, "01", "selfsup", SELFSUP),
                  validation_record(tmp_path, "02", "pca", {"enabled": False})]
    html = build_report(outputs, {"evaluation": {"n_boot": 200}}, tmp_path / "index.html",
                        validation=validation).read_text()
    assert html.index('id="metrics"') < html.index('id="selection"') < html.index('id="identification"')
    assert '<a href="#selection">' in html
    section = html[html.index('id="selection"'):html.index('id="identification"')]
    assert "Model selection (training pairs only)" in section
    assert section.count("&#10003; chosen") == 2  # pca's n_components=50, selfsup's pca baseline
    assert "fell back to the pca baseline" in section and "this entry fits and draws with the pca baseline" in section
    assert "<details><summary>Guards inside the validation fits (1)" in section
    assert "validation disabled" in section
    assert "_per_image" not in html and "0.740, 0.740" not in html
    # and the top of the page says a guard's model stands in for a method
    warnings = html[html.index('id="warnings"'):html.index('id="summary"')]
    assert "replaced 1 of 2 validated fits" in warnings and "sub-01 selfsup (pca baseline)" in warnings
    # without validation records, no section
    html = build_report(outputs, {"evaluation": {"n_boot": 200}}, tmp_path / "plain.html").read_text()
    assert 'id="selection"' not in html


def test_a_split_of_seen_images_is_named_in_the_warnings(tmp_path):
    from fmrirecon.report import seen_in_training_warnings

    records = []
    for subject, seen in (("01", 10), ("02", 0)):
        path = tmp_path / f"{subject}.json"
        path.write_text(json.dumps({"images": {"n": 10, "in_training": seen}}))
        records.append({"subject": subject, "method": "pca", "split": "test", "summary": path})
    warnings = seen_in_training_warnings(records)
    assert len(warnings) == 1
    assert warnings[0].startswith("sub-01 test: 10 of 10 test images were also training images")

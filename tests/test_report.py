"""`sicsrec report`: result files → mean ± std tables and plots, regenerated in place."""

import json
import statistics
import xml.etree.ElementTree as ET

from sicsrec.cli import main


def fake_run(folder, name, seed, ndcg10, hr10, views=("",)):
    run = folder / name
    run.mkdir(parents=True)
    report = {"seed": seed, "epochs": 3, "dataset": "Gen", "best_valid": hr10 + 0.01}
    rows = ["epoch,step," + ",".join(f"valid/{v + '/' if v else ''}hr@10" for v in views)]
    for view in views:
        tag = f"test/{view}/" if view else "test/"
        report.update(
            {tag + "ndcg@10": ndcg10, tag + "hr@10": hr10, tag + "ndcg@5": ndcg10 / 2, tag + "ndcg@20": ndcg10 * 1.2}
        )
    for epoch in range(3):
        rows.append(f"{epoch},{epoch * 10}," + ",".join(str(0.1 * (epoch + 1)) for _ in views))
    (run / "metrics.json").write_text(json.dumps(report))
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")


def test_report_tables_mean_and_std_over_seeds_and_replaces_its_block(tmp_path, capsys):
    stage2 = tmp_path / "runs" / "gen" / "stage2"
    values = {2024: 0.10, 2025: 0.12, 2026: 0.14}
    for seed, v in values.items():
        fake_run(stage2, f"seed{seed}", seed, v, 2 * v)
    fake_run(stage2, "no_decoder-seed2024", 2024, 0.05, 0.1)
    fake_run(tmp_path / "runs" / "gen" / "stage1", "seed2024", 2024, 0.08, 0.16, views=("id", "content"))
    out = tmp_path / "results.md"
    out.write_text("# Results\n\nnarrative kept\n")
    args = [
        str(stage2),
        str(tmp_path / "runs" / "gen" / "stage1"),
        "--out",
        str(out),
        "--figures",
        str(tmp_path / "figures"),
        "--title",
        "Gen",
    ]
    main(["report", *args])
    text = out.read_text()
    mean, std = 100 * statistics.mean(values.values()), 100 * statistics.stdev(values.values())
    assert "| gen/stage2 | 2024, 2025, 2026 |" in text and f"{mean:.2f} ± {std:.2f}" in text
    row = next(line for line in text.splitlines() if line.startswith("| gen/stage2 |"))
    header = next(line for line in text.splitlines() if line.startswith("| run | seeds | protocol |"))
    cells = dict(zip(header.split("|"), row.split("|")))
    valid = [100 * (2 * v + 0.01) for v in values.values()]  # the best validation score, never a test one
    assert cells[" validation "].strip() == f"{statistics.mean(valid):.2f} ± {statistics.stdev(valid):.2f}"
    assert "| gen/stage2 no_decoder | 2024 |" in text
    assert "| gen/stage1 (id encoder) | 2024 |" in text and "| gen/stage1 (content encoder) | 2024 |" in text
    assert text.startswith("# Results\n\nnarrative kept\n")
    for svg in ("gen_ndcg_at_k.svg", "gen_valid_hr10.svg"):
        root = ET.fromstring((tmp_path / "figures" / svg).read_text())  # well-formed SVG
        assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) >= 2
        assert f"figures/{svg}" in text

    # regenerated: the block is replaced, not appended again
    fake_run(stage2, "seed2027", 2027, 0.16, 0.32)
    main(["report", *args])
    text = out.read_text()
    assert text.count("sicsrec report: begin") == 1 and "2024, 2025, 2026, 2027" in text


def test_a_plot_with_many_runs_keeps_its_whole_legend_inside_the_figure():
    from sicsrec.report import svg_lines

    series = {f"set/stage2 s{seed}": [(0, 0.1), (1, 0.2 + seed / 1000)] for seed in range(40)}
    root = ET.fromstring(svg_lines(series, "curves", "epoch", "HR@10"))
    labels = [float(t.get("y")) for t in root.iter("{http://www.w3.org/2000/svg}text") if t.text.startswith("set/")]
    assert len(labels) == 40 and max(labels) < float(root.get("height"))


def test_validation_curve_puts_a_validated_starting_point_at_epoch_minus_one(tmp_path):
    from sicsrec.report import validation_curve

    path = tmp_path / "metrics.csv"
    path.write_text(
        "epoch,start/valid/hr@10,step,train/loss,valid/hr@10\n,0.25,0,,\n0,,19,,0.24\n0,,19,3.1,\n1,,39,,0.26\n"
    )
    assert validation_curve(path) == [(-1, 0.25), (0, 0.24), (1, 0.26)]


def test_report_splits_test_targets_into_cold_rare_and_warm_and_does_not_take_buckets_for_views(tmp_path, capsys):
    stage2 = tmp_path / "runs" / "gen" / "stage2"
    for seed, cold in ((1, 0.02), (2, 0.04)):
        fake_run(stage2, f"seed{seed}", seed, 0.1, 0.2)
        path = stage2 / f"seed{seed}" / "metrics.json"
        report = json.loads(path.read_text())
        for bucket, hr, users in (("cold", cold, 50), ("rare", 0.1, 150), ("warm", 0.3, 400)):
            report.update({f"test/{bucket}/hr@10": hr, f"test/{bucket}/ndcg@10": hr / 2, f"test/{bucket}/users": users})
        path.write_text(json.dumps(report))
    out = tmp_path / "results.md"
    main(["report", str(stage2), "--out", str(out), "--figures", str(tmp_path / "fig"), "--title", "T"])
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| gen/stage2")]
    assert len(rows) == 2  # the main table and the bucket table, one group each: buckets are not views
    cells = [c.strip() for c in rows[1].strip("|").split("|")]
    assert cells[:4] == ["gen/stage2", "1, 2", "3.00 ± 1.41 [50]", "1.50 ± 0.71"]
    assert cells[-2:] == ["30.00 ± 0.00 [400]", "15.00 ± 0.00"]


def test_a_tuned_grid_reports_its_pick_and_the_parity_baseline_and_divides_by_the_pick(tmp_path):
    ids = tmp_path / "runs" / "gen" / "id"
    for seed in (1, 2):
        fake_run(ids, f"item_dropout0.5-seed{seed}", seed, 0.10 + 0.02 * seed, 0.20)  # the pick: NDCG 0.12, 0.14
        fake_run(ids, f"seed{seed}", seed, 0.09 + 0.02 * seed, 0.25)  # RecBole parity: NDCG 0.11, 0.13
        for run in (f"item_dropout0.5-seed{seed}", f"seed{seed}"):
            path = ids / run / "metrics.json"
            path.write_text(json.dumps({**json.loads(path.read_text()), "test/recbole/hr@10": 0.3, "git_commit": "c1"}))
    fake_run(ids, "item_dropout0.2-seed1", 1, 0.5, 0.5)  # a grid point not picked: its test score is never shown
    tune = {
        "monitor": "valid/hr@10",
        "grid_seed": 1,
        "pick": "item_dropout0.5",
        "points": [
            {"name": "", "overrides": {"model.init_args.item_dropout": 0.0}, "valid": 0.21},
            {"name": "item_dropout0.2", "overrides": {"model.init_args.item_dropout": 0.2}, "valid": 0.22},
            {"name": "item_dropout0.5", "overrides": {"model.init_args.item_dropout": 0.5}, "valid": 0.23},
        ],
    }
    (ids / "tune.json").write_text(json.dumps(tune))
    out, rows = tmp_path / "results.md", tmp_path / "results.json"
    rows.write_text(json.dumps({"other title": [{"kept": True}]}))
    main(
        [
            "report",
            str(ids),
            "--out",
            str(out),
            "--figures",
            str(tmp_path / "fig"),
            "--title",
            "ID",
            "--json",
            str(rows),
        ]
    )
    text = out.read_text()
    tuned = next(line for line in text.splitlines() if line.startswith("| gen/id tuned |"))
    parity = next(line for line in text.splitlines() if line.startswith("| gen/id RecBole parity |"))
    assert tuned.endswith("| 1 / 1 |") and "recbole: 30.00 ± 0.00 / " in tuned
    assert parity.endswith(f"| {0.25 / 0.20:.3f} / {0.12 / 0.13:.3f} |")
    assert "50.00" not in text  # the unpicked point's test numbers
    grid = [line for line in text.splitlines() if line.startswith("| gen | item_dropout")]
    assert [line.endswith("| yes |") for line in grid] == [False, False, True] and "| 22.00 |" in grid[1]
    assert "(RecBole parity)" in grid[0]
    tables = json.loads(rows.read_text())
    assert tables["other title"] == [{"kept": True}]
    hr10 = {(r["model"], r["protocol"]): r for r in tables["ID"] if r["metric"] == "hr@10"}
    assert hr10[("gen/id tuned", "recbole")]["mean"] == 0.3 and hr10[("gen/id tuned", "recbole")]["seeds"] == [1, 2]
    assert hr10[("gen/id RecBole parity", "ninerec")]["mean"] == 0.25
    assert hr10[("gen/id tuned", "ninerec")]["commit"] == ["c1"]


def test_report_adds_targets_without_a_cover_where_a_run_has_them(tmp_path):
    stage2 = tmp_path / "runs" / "gen" / "stage2"
    for name, no_cover in (("seed1", 0.05), ("seed2", 0.07), ("seed3", None), ("text-seed1", None)):
        fake_run(stage2, name, int(name[-1]), 0.1, 0.2)
        path = stage2 / name / "metrics.json"
        report = json.loads(path.read_text())
        groups = [("cold", 0.02, 50), ("rare", 0.1, 150), ("warm", 0.3, 400)]
        groups += [("no_cover", no_cover, 30), ("cover", 0.25, 570)] if no_cover is not None else []
        for group, hr, users in groups:
            report.update({f"test/{group}/hr@10": hr, f"test/{group}/ndcg@10": hr / 2, f"test/{group}/users": users})
        path.write_text(json.dumps(report))
    out = tmp_path / "results.md"
    main(["report", str(stage2), "--out", str(out), "--figures", str(tmp_path / "fig"), "--title", "T"])
    lines = out.read_text().splitlines()
    assert any(line.startswith("| run | seeds | cold HR@10") and line.endswith("no_cover NDCG@10 |") for line in lines)
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| gen/stage2")}
    assert len(rows) == 2  # cover groups are not views either
    cells = [c.strip() for c in rows["gen/stage2"].strip("|").split("|")]
    assert cells[-2:] == ["6.00 ± 1.41 (2 of 3 runs) [30]", "3.00 ± 0.71 (2 of 3 runs)"]  # seed 3 has none
    assert [c.strip() for c in rows["gen/stage2 text"].strip("|").split("|")][-2:] == ["–", "–"]

"""`python -m bench original`'s figures and table, on canned results in the seed stack's
summary format (bench figures themselves are never asserted), and its copy of the stack."""

from pathlib import Path

import pytest

from bench.original import (
    IDLE_SECTION,
    MAIN_MARK,
    SeedStack,
    SeedStackMissing,
    herald_figures,
    original_figures,
    ratio,
    table,
)


def agg(median, lo=None, hi=None):
    return {"median": median, "min": median if lo is None else lo,
            "max": median if hi is None else hi, "n": 3}  # fmt: skip


# The shape summarize.py prints (trimmed to what the compare reads), plus "idle".
SUMMARY = {
    "versions": {"celery": "5.7.0", "node": "v20.20.2"},
    "seed_stack": {
        "gunicorn-w2": {
            "cold_start_s": agg(9.5, 7.1, 14.0),
            "latency_seq_ms": {"p50_ms": agg(6.4, 6.0, 7.0), "p90_ms": agg(8.0),
                               "p99_ms": agg(11.0), "mean_ms": agg(6.9), "lost_total": 0},
            "throughput": {
                "tasks_per_s": agg(250.0, 240.0, 260.0),
                "stack_cpu_ms_per_task": agg(6.0),
                "lost_per_run": [0, 2, 0],
                "services": {
                    "rabbitmq": {"peak_rss_mb": agg(150.0), "peak_pss_mb": agg(140.0)},
                    "notifier": {"peak_rss_mb": agg(65.0), "peak_pss_mb": agg(60.0)},
                    "gunicorn": {"peak_rss_mb": agg(100.0), "peak_pss_mb": agg(80.0)},
                    "celery": {"peak_rss_mb": agg(100.0), "peak_pss_mb": agg(70.0)},
                },
            },
        }
    },
    "idle": {"after_idle_ms": [10.0, 4.0, 17.0], "idle_cpu_pct_one_core": [1.2, 1.0, 1.4]},
}


def test_original_figures_read_the_seed_summary():
    fig = original_figures(SUMMARY)
    assert fig["p50_ms"] == (6.4, 6.0, 7.0)
    assert fig["p99_ms"][0] == 11.0
    assert fig["tasks_per_s"] == (250.0, 240.0, 260.0)
    assert fig["lost"][0] == 2
    assert fig["cpu_ms_per_task"][0] == 6.0
    assert fig["rss_mb"][0] == 415.0
    assert fig["start_s"] == (9.5, 7.1, 14.0)
    assert fig["after_idle_ms"] == (10.0, 4.0, 17.0)
    assert fig["idle_cpu_pct"][0] == 1.2


def test_table_prints_both_sides_and_the_ratio():
    rounds = [
        {"p50_ms": 1.6, "p99_ms": 2.2, "after_idle_ms": 5.0, "tasks_per_s": 500.0, "lost": 0,
         "cpu_ms_per_task": 1.5, "w_tasks_per_s": 640.0, "w_lost": 0,
         "w_cpu_ms_per_task": 1.9, "rss_mb": 110.0, "start_s": 1.1, "idle_cpu_pct": 0.01},
        {"p50_ms": 1.8, "p99_ms": 2.6, "after_idle_ms": 3.0, "tasks_per_s": 700.0, "lost": 1,
         "cpu_ms_per_task": 1.3, "w_tasks_per_s": 660.0, "w_lost": 0,
         "w_cpu_ms_per_task": 1.8, "rss_mb": 120.0, "start_s": 1.3, "idle_cpu_pct": 0.03},
    ]
    herald = herald_figures(rounds)
    assert herald["p50_ms"] == pytest.approx((1.7, 1.6, 1.8))
    assert herald["lost"][0] == 1  # lost results add up over rounds
    lines = table(original_figures(SUMMARY), herald)
    by_label = {line[:44].strip(): line for line in lines[1:]}
    p50 = by_label["latency p50, back to back"]
    assert "6.40 ms (6.00-7.00)" in p50 and "1.70 ms (1.60-1.80)" in p50
    assert p50.rstrip().endswith("0.27×")
    assert by_label["throughput, 20 principals, no waiting"].rstrip().endswith("2.40×")
    # Herald's windowed run is set against the original's one throughput run
    assert by_label["throughput, 20 principals, 8 in flight each"].rstrip().endswith("2.60×")
    assert by_label["first task after 30 s idle"].rstrip().endswith("0.40×")
    assert by_label["RSS of the services (peak, with children)"].rstrip().endswith("0.28×")
    assert by_label["start to first round trip"].rstrip().endswith("0.13×")


def test_a_figure_missing_on_one_side_is_a_dash_without_ratio():
    lines = table(original_figures({"seed_stack": {}}), herald_figures([{"p50_ms": 1.0}]))
    p50 = next(line for line in lines if line.startswith("latency p50"))
    assert "-" in p50.split("1.00 ms")[0] and p50.rstrip().endswith("ms")
    assert ratio(0.0, 0) == "" and ratio(1.0, None) == "" and ratio(40.0, 2.0) == "20.0×"


def test_the_copy_gets_the_idle_section_before_main(tmp_path: Path):
    with pytest.raises(SeedStackMissing, match="SEED_STACK"):
        SeedStack(tmp_path / "nowhere", "2")
    src = tmp_path / "seed"
    (src / "venv").mkdir(parents=True)  # a previous run's leftovers are not copied
    (src / "bench.sh").write_text(f"setup() {{ :; }}\n{MAIN_MARK}\nsetup\n")
    seed = SeedStack(src, "2")
    try:
        script = (seed.dir / "bench.sh").read_text()
        assert script.index("idle_section()") < script.index(MAIN_MARK)
        assert IDLE_SECTION.strip() in script
        assert (seed.dir / "seed_idle.py").is_file() and not (seed.dir / "venv").exists()
        assert (src / "bench.sh").read_text().count("idle_section") == 0
    finally:
        seed.remove()

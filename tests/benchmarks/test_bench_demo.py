"""The main-job timing benchmark: stage times read from a run's log, and a failed demo is an error
that says how the script exited (the run itself takes minutes: it is the benchmark, not a test)."""
import pytest

BENCHMARK = "bench_demo"


def test_stage_times_from_a_pipeline_log(bench):
    log = ("2026-12-04T19:06:05 pipeline start: PipelineConfig(preset='default')\n"
           "2026-12-04T19:06:05 [1/5] data: openmoji, 50% caption noise  (t=0s)\n"
           "2026-12-04T19:06:37 [2/5] dual-track experts: 2 run(s) x 2 tracks x 10 epochs  (t=31s)\n"
           "2026-12-04T19:09:37       random: R-sum 21.1  (t=211s)\n"
           "2026-12-04T19:09:51 [5/5] report and exports  (t=225s)\n")
    assert bench.stage_times(log) == {"data": 0, "dual-track experts": 31, "report and exports": 225}


def test_a_failing_demo_is_an_error_naming_its_exit(bench, tmp_path):
    with pytest.raises(SystemExit, match="scripts/demo.sh exited with"):
        bench.main(["--python", str(tmp_path / "no-such-python"), "--out", str(tmp_path / "demo.json")])
    assert not (tmp_path / "demo.json").exists()

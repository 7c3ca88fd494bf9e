"""The OT-solver benchmark runs in its quickest mode and writes the JSON and markdown it
promises. No timing is asserted: timings belong to benchmarks, not tests."""

import json


def test_ot_solver_benchmark_quick_writes_expected_json(tmp_path):
    from benchmarks import ot_solver

    ot_solver.main(["--quick", "--device", "cpu", "--threads", "1", "--out", str(tmp_path)])

    payload = json.loads((tmp_path / "ot_solver.json").read_text(encoding="utf-8"))
    assert {"benchmark", "command", "settings", "machine", "rows", "plan_max_abs_difference", "verdict"} <= set(payload)
    assert payload["benchmark"] == "ot_solver"
    assert payload["settings"]["timing_dtype"] == "float32"
    assert payload["settings"]["equality_dtype"] == "float64"
    row = payload["rows"][0]
    assert {"batch", "tokens", "solvers"} <= set(row)
    assert {"optical", "pot_loop"} <= set(row["solvers"])
    for entry in row["solvers"].values():
        assert {"seconds", "iterations", "speedup_of_optical"} <= set(entry)
    differences = payload["plan_max_abs_difference"]
    assert {"size", "at_timed_settings", "converged"} <= set(differences)
    # the equality check is a correctness property, not a timing: plans agree with POT
    assert payload["verdict"]["plans_equal_to_1e-5"] is True
    assert (tmp_path / "ot_solver.md").read_text(encoding="utf-8").startswith("# OT solver")


def test_loop_throughput_runs_the_real_loop_and_the_reference(tmp_path, tiny_teacher_st, tiny_student, monkeypatch):
    from benchmarks import loop_throughput

    monkeypatch.setenv("OPTICAL_CACHE", str(tmp_path / "cache"))
    payload = loop_throughput.main(["--quick", "--device", "cpu", "--threads", "1", "--out", str(tmp_path),
                                    "--teacher", str(tiny_teacher_st), "--student", str(tiny_student),
                                    "--objectives", "mse,token_ot+mse", "--steps", "6", "--warmup", "2"])
    assert [c["objective"] for c in payload["configurations"]] == ["mse", "token_ot+mse"]
    for row in payload["configurations"]:
        assert row["optical_pairs_per_s"] > 0 and row["reference_pairs_per_s"] > 0
        assert row["ratio"] == row["optical_pairs_per_s"] / row["reference_pairs_per_s"]
    saved = json.loads((tmp_path / "loop_throughput.json").read_text())
    assert saved["configurations"] == payload["configurations"] and (tmp_path / "loop_throughput.md").is_file()


def test_ot_solver_benchmark_reports_a_failing_pot_solver_and_goes_on(tmp_path, monkeypatch):
    """POT's scaling solve_batch crashes on CUDA tensors: the benchmark records it and finishes."""
    import ot

    from benchmarks import ot_solver

    if not ot_solver.has_pot_batch():
        return
    real = ot.solve_batch

    def crashes_on_scaling(*args, method="log_sinkhorn", **kwargs):
        if method == "sinkhorn":
            raise RuntimeError("expected all tensors to be on the same device")
        return real(*args, method=method, **kwargs)

    monkeypatch.setattr(ot, "solve_batch", crashes_on_scaling)
    payload = ot_solver.main(["--quick", "--device", "cpu", "--threads", "1", "--out", str(tmp_path)])
    [row] = [r for r in payload["rows"] if "pot_batch_torch_scaling" in r["solvers"]][:1]
    assert row["solvers"]["pot_batch_torch_scaling"] == {
        "error": "RuntimeError: expected all tensors to be on the same device"}
    assert "seconds" in row["solvers"]["pot_batch_torch"]
    assert payload["verdict"]["failed_solvers"]["pot_batch_torch_scaling"].startswith("RuntimeError")
    assert "failed" in (tmp_path / "ot_solver.md").read_text()

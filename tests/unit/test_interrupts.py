import os
import signal
import threading

import pytest
from mlflow import MlflowClient

from anomaly.interrupts import deferred_ctrl_c
from anomaly.tracking.mlflow_logger import start_run


def _ctrl_c() -> None:
    """Ctrl-C to this process, delivered before the next Python instruction."""
    os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture(autouse=True)
def _python_handles_ctrl_c():
    # A suite started in the background inherits SIGINT as ignored: give it Python's.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_a_ctrl_c_inside_the_block_is_raised_after_it():
    steps = []
    with pytest.raises(KeyboardInterrupt), deferred_ctrl_c():
        _ctrl_c()
        steps.append("after the signal")
        steps.append("the block's end")
    assert steps == ["after the signal", "the block's end"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_inside_the_block_is_raised_at_once():
    steps = []
    with pytest.raises(KeyboardInterrupt) as raised, deferred_ctrl_c():
        _ctrl_c()
        steps.append("after the first")
        _ctrl_c()
        steps.append("after the second")
    assert steps == ["after the first"]
    assert raised.value.__context__ is None  # one interrupt, not a second from the block's end
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_a_ctrl_c_the_block_runs_and_the_handler_is_back():
    with deferred_ctrl_c():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        _ctrl_c()  # Python's handler again: raised at once
        raise AssertionError("not reached")


def test_the_handler_in_place_before_gets_the_signal():
    seen = []
    signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    with deferred_ctrl_c(), deferred_ctrl_c():  # nested: the outer one passes it on
        _ctrl_c()
        assert seen == []
    assert seen == [signal.SIGINT]


def test_outside_the_main_thread_nothing_changes():
    handlers = []

    def body():
        with deferred_ctrl_c():
            handlers.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert handlers == [signal.default_int_handler]


def test_a_ctrl_c_during_an_upload_finishes_it_and_the_run_ends_killed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def log_interrupted(metrics):
        import mlflow

        _ctrl_c()  # lands inside the store's write
        mlflow.log_metrics(metrics)

    with pytest.raises(KeyboardInterrupt), start_run(uri=uri, experiment="e") as run:
        run_id = run.run_id
        run.call("metrics", log_interrupted, {"a": 1.0})
        raise AssertionError("the Ctrl-C was not raised after the upload")
    logged = MlflowClient(uri).get_run(run_id)
    assert logged.data.metrics == {"a": 1.0}
    assert logged.info.status == "KILLED"

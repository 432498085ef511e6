"""Signals: deferred to the outermost loop's boundary, immediate outside one."""

from __future__ import annotations

import os
import signal

import pytest

from torchpint.runtime import signals


@pytest.fixture
def handlers():
    signals.install()
    yield
    signals.uninstall()


def test_inside_a_loop_a_signal_waits_for_the_boundary(handlers):
    seen = []
    with pytest.raises(signals.Interrupted) as err, signals.boundaries() as outer:  # noqa: PT012
        assert outer
        for i in range(5):
            if i == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            seen.append(i)  # the rest of the step still runs
            sig = signals.poll()
            if sig:
                signals.clear()
                raise signals.Interrupted(sig, f"step {i}", "c.pt")
    assert seen == [0, 1, 2]
    assert err.value.exit_code == 143 and "SIGTERM at step 2" in str(err.value)
    assert "checkpoint at c.pt" in str(err.value)


def test_nested_loops_leave_the_stop_to_the_outermost(handlers):
    with signals.boundaries(), signals.boundaries() as inner:
        assert not inner
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.poll() == 0  # the inner loop's boundary is not one to stop at
        assert signals.pending() == signal.SIGINT
        signals.clear()


def test_a_loop_that_ends_before_a_boundary_still_stops(handlers):
    with pytest.raises(signals.Interrupted, match="SIGTERM"), signals.boundaries():
        os.kill(os.getpid(), signal.SIGTERM)


def test_outside_a_loop_sigterm_stops_at_once(handlers):
    with pytest.raises(signals.Interrupted, match="nothing saved"):
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0.1)  # give the handler a chance to run


def test_a_second_signal_does_not_wait(handlers):
    with pytest.raises(KeyboardInterrupt), signals.boundaries():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    signals.clear()


def test_installs_nest():
    before = signal.getsignal(signal.SIGTERM)
    signals.install()
    signals.install()  # a command that runs another (the demo)
    signals.uninstall()
    assert signal.getsignal(signal.SIGTERM) is not before  # still handled
    signals.uninstall()
    assert signal.getsignal(signal.SIGTERM) is before

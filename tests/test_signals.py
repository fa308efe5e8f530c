import gc
import signal
import sys
import time

import pytest

from orchestrator.signals import Interrupted, StopOnSignals


class SignalsInFinaliser:
    """Raises SIGINT from its finaliser: the handler runs there, and Python drops what it raises."""

    def __init__(self, signum: int):
        self.signum = signum

    def __del__(self):
        signal.raise_signal(self.signum)


def test_a_stop_dropped_inside_a_finaliser_is_raised_again():
    repeats: list[str] = []
    with pytest.raises(Interrupted) as caught:
        with StopOnSignals(on_repeat=repeats.append) as stop:
            SignalsInFinaliser(signal.SIGTERM)  # dropped at once: its __del__ raises the signal
            time.sleep(5)  # reached only if the stop was lost
    assert caught.value.signum == signal.SIGTERM
    assert stop.received == [signal.SIGTERM] and repeats == []


def test_a_stop_dropped_in_a_collected_cycle_is_raised_again():
    with pytest.raises(Interrupted):
        with StopOnSignals():
            first, second = SignalsInFinaliser(signal.SIGINT), SignalsInFinaliser(signal.SIGINT)
            first.other, second.other = second, first
            del first, second
            gc.collect()  # both finalisers signal: one stop is raised, the other signal is a repeat
            time.sleep(5)


def test_a_second_signal_is_noted_not_raised():
    repeats: list[str] = []
    with pytest.raises(Interrupted):
        with StopOnSignals(on_repeat=repeats.append):
            try:
                signal.raise_signal(signal.SIGINT)
            finally:  # the clean-up, which a second signal must not cut short
                signal.raise_signal(signal.SIGHUP)
    assert repeats == ["nav-orch: SIGHUP again: still removing containers, please wait"]


def test_leaving_restores_the_handlers_and_the_unraisable_hook():
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    hook = sys.unraisablehook
    with StopOnSignals():
        assert sys.unraisablehook is not hook
    assert sys.unraisablehook is hook
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers


def test_other_dropped_exceptions_still_reach_the_previous_hook():
    seen: list[BaseException] = []
    previous, sys.unraisablehook = sys.unraisablehook, lambda unraisable: seen.append(unraisable.exc_value)
    try:
        class Broken:
            def __del__(self):
                raise ValueError("broken finaliser")

        with StopOnSignals():
            Broken()
    finally:
        sys.unraisablehook = previous
    assert [str(error) for error in seen] == ["broken finaliser"]

"""`sandbox up --rtt`: what it accepts and what it refuses (pure)."""
import pytest

from k8sctl.errors import UsageError
from k8sctl_sandbox.cli import parse_rtt


@pytest.mark.parametrize("text, ms", [("0", 0.0), ("100ms", 100.0), ("0.2s", 200.0), (" 50MS ", 50.0), ("0ms", 0.0)])
def test_rtt_accepted(text, ms):
    assert parse_rtt(text) == ms


@pytest.mark.parametrize("text", ["100", "fast", "-5ms", "1m", "11s", ""])
def test_rtt_refused_with_the_flag_named(text):
    with pytest.raises(UsageError, match="--rtt"):
        parse_rtt(text)

import ctypes
import sys

import pytest

from imf_cli.runtime import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_keep_freed_memory_takes_effect_on_glibc():
    try:
        ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        pytest.skip("no glibc")
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # idempotent


def test_keep_freed_memory_is_a_no_op_elsewhere(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory() is False

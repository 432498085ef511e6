"""Memory estimates refuse a run that cannot fit, naming what to lower."""

import pytest

from torchpint.runtime.resources import MemoryLimitError, available_bytes, require_memory


def test_a_run_larger_than_the_machine_is_refused():
    free = available_bytes()
    assert free is not None and free > 0
    require_memory(1024, "a tiny run", "--nothing")
    with pytest.raises(MemoryLimitError, match="needs about .* GiB.*; lower --nt"):
        require_memory(free * 4.0, "a huge solve", "--nt")

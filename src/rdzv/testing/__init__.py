"""Test support that ships with rdzv: the store contract suite and a fake clock.

Plugin authors run the contract suite against their backend::

    from rdzv.testing.contract import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store_url(self) -> str:
            return "mystore://..."  # a fresh, empty store
"""

from rdzv.testing.clock import FakeClock

__all__ = ["FakeClock"]

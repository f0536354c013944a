import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Models this small gain nothing from threads; the machine's cores are shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

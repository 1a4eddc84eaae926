"""Shared test set-up: one intra-op thread, so that results and run time do not depend on how busy the machine is.

Two OpenMP threads competing with another process for two cores run small tensor operations many times slower
than one thread; the tests use small tensors throughout, where a second thread gains little.
"""

import torch

torch.set_num_threads(1)

"""One process of the two-process test (`test_distributed.py`): 4 CPU devices each, gloo collectives.

Run as `python multiprocess_worker.py <process_id> <port> <out.npz> [fft_backend]`; both processes build the same
distributed simulation over the 8 global devices, and process 0 writes the gathered results.
"""

from __future__ import annotations

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["JAX_ENABLE_X64"] = "1"

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")


def main() -> None:
    process_id, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    backend = sys.argv[4] if len(sys.argv) > 4 else "rfft"
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    assert jax.process_count() == 2
    assert len(jax.devices()) == 8
    assert len(jax.local_devices()) == 4

    import numpy as np
    from jax.experimental import multihost_utils
    from simulation_case import simulate  # the same case as the single-process tests

    results = simulate(device_grid=(2, 4), fft_backend=backend)
    gathered = [np.asarray(multihost_utils.process_allgather(r, tiled=True)) for r in results]
    if process_id == 0:
        np.savez(out, *gathered)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()

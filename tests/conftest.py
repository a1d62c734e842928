"""Test-wide setup: 8 simulated CPU devices for the sharding tests, CPU only."""

import os

# Must happen before JAX is imported anywhere: every test process sees 8 CPU
# devices, so mesh tests run on a single machine. Single-device code is unaffected.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

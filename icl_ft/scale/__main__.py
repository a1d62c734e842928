"""`python -m icl_ft.scale`: prints the fit table (batch 16, seq 512: the largest recipe).

The CPU device count is set before JAX is first imported: the largest slice's chips as devices.
"""

import os

from icl_ft.scale import topologies

_FLAG = "--xla_force_host_platform_device_count=" + str(
    max(t.chips for t in topologies.TOPOLOGIES.values()))
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

from icl_ft.scale import fit  # pylint: disable=g-import-not-at-top,wrong-import-position

print(fit.fit_table(fit.fit_rows()), end="")

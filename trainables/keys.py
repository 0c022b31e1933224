"""Names the engine's reports share with the orchestrator (torch-free: the driver reads them
without importing torch)."""

from __future__ import annotations

import errno

# a report holding it (1.0) says the loss went NaN/inf and the trial stopped at once
DIVERGED_KEY = "diverged"
# set on a report sent again after a restore (the tracker drops repeats; no trial fact)
REPLAYED_KEY = "replayed"
# errno values that mean "the storage cannot take more": the sweep can resume once it can
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})

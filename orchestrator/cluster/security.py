"""Keep credentials out of what a sweep writes: Ray's logs, MLflow, the sweep's files.

Why: a sweep's outputs are shared (a storage bucket, an MLflow server, logs pasted into an
issue). Ray Tune copies the driver's AWS credentials into every trial's runtime env, and
Ray's runtime-env agent logs that env in plain text (`/tmp/ray/session_*/logs/
runtime_env_agent.log`, readable by every user of the machine) and keeps it in the cluster's
state (`ray list actors --detail`). Trials do not need that copy: on a local Ray they inherit
the driver's environment, and on a cluster each node gets credentials its own way (an
instance profile, `~/.aws`), as cluster.yaml sets up. So the driver stops the copy.

Tracking-server credentials reach MLflow through MLFLOW_TRACKING_USERNAME/PASSWORD or
MLFLOW_TRACKING_TOKEN, never through the URI (the CLI refuses a password in a URI, which
would be saved in sparsesweep.json and printed); the Ray token stays in ~/.ray/auth_token.
tests/test_faults.py runs a sweep with fake credentials in its environment and searches
every file it wrote, Ray's session logs included.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

# Credentials Ray Tune would copy into each trial's runtime env (ray.tune.execution.class_cache).
CLOUD_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN",
                     "AWS_SESSION_TOKEN")


def stop_credential_copies() -> None:
    """Remove the cloud credentials from the variables Ray Tune copies into trials (driver)."""
    from ray.tune.execution import class_cache

    copied = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)  # Ray 2.60's name (pinned)
    if copied is not None:  # another Ray: tests/test_faults.py's credential search tells
        class_cache.ENV_VARS_TO_PROPAGATE = frozenset(copied) - set(CLOUD_CREDENTIALS)


# A URL's password (scheme://user:PASSWORD@host) and secret-looking query values or KEY=VALUE.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+(?P<at>@)")
_SECRET_VALUE = re.compile(r"(?i)(?P<key>[\w.-]*(?:password|passwd|secret|token|api_?key|credential)[\w.-]*=)"
                           r"(?P<value>[^&\s]+)")
REDACTED = "***"


def redact(text: str) -> str:
    """`text` with URL passwords and secret-looking KEY=VALUE values replaced by ***."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}{m['at']}", text)
    return _SECRET_VALUE.sub(lambda m: f"{m['key']}{REDACTED}", text)


def redact_command(argv: Sequence[str], program: str = "python -m orchestrator.sweep") -> str:
    """The command line as a shell would take it again, credentials redacted: what the parent
    MLflow run's description records (an MLflow server is shared; a password must not be)."""
    return " ".join([program, *(shlex.quote(redact(str(a))) for a in argv)])

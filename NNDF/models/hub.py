"""Whether the HuggingFace hub can be reached, decided once per process and fast.

Without this, a `from_pretrained` on a machine with no network spends about 45 s in
retries before failing. When the hub is unreachable (or HF_HUB_OFFLINE is set), loads
go straight to the local HF cache, and a miss there is one error line at once.
"""

from __future__ import annotations

import functools
import socket
from urllib.parse import urlparse


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout_s: float = 3.0) -> bool:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout_s):
            return True
    except OSError:
        return False


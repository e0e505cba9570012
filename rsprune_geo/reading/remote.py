"""Remote rasters: GDAL's retry settings, credentials kept out of records, and failed reads.

GDAL reads ``/vsicurl/`` and ``/vsis3/`` paths with HTTP range requests. The settings below make a
failed request retry, unless the user set them; they are set when the package first reads a
raster. URLs may carry credentials (a signed URL, a token): :func:`redact` removes them from
everything the run writes or says.
"""

from __future__ import annotations

import contextlib
import os
import re

from ..errors import InputError

#: GDAL settings for remote rasters (``/vsicurl/``, ``/vsis3/``…), unless the user set them:
#: retry a failed range request (HTTP 429/5xx) three times, half a second apart, and do not
#: list the remote folder on open.
REMOTE_DEFAULTS = {"GDAL_HTTP_MAX_RETRY": "3", "GDAL_HTTP_RETRY_DELAY": "0.5",
                   "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
for _key, _value in REMOTE_DEFAULTS.items():
    os.environ.setdefault(_key, _value)


#: Query parameters of a URL that carry credentials (signed URLs, tokens, keys).
_SECRET_PARAMS = re.compile(r"(?i)([?&](?:x-amz-[a-z-]*|x-goog-[a-z-]*|sig|signature|se|sp|sv|st|token|access_token|"
                            r"key|api_key|apikey|secret|password|pwd|credential)=)[^&#]*")
_USERINFO = re.compile(r"(://)[^/@\s]+@")
REDACTED = "REDACTED"


def redact(text: str) -> str:
    """``text`` with the credentials of any URL in it replaced.

    Credentials are ``user:password@``, and signed-URL and token query parameters. For records, logs and
    messages.
    """
    out = _SECRET_PARAMS.sub(rf"\1{REDACTED}", _USERINFO.sub(rf"\1{REDACTED}@", text))
    return text if out == text else out  # the same string, not a copy: a run records a million paths


def has_credentials(path: str) -> bool:
    """Whether a path or URL carries credentials that :func:`redact` removes."""
    return redact(path) != path


@contextlib.contextmanager
def read_errors(path: str):
    """Turn a failed read into one :class:`InputError` naming the file.

    A failed read is a file cut short, or a connection dropped for good. The error names the file or
    URL.
    """
    from rasterio.errors import RasterioIOError

    try:
        yield
    except RasterioIOError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "read failed"
        raise InputError(f"{path}: reading failed ({first})") from None

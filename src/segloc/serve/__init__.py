"""``segloc serve``: segment, correct, localize and score images and volumes in the browser.

A FastAPI application (:func:`create_app`) serving one page of plain JavaScript modules and
its HTTP API; :func:`run` starts it with uvicorn. Needs the ``serve`` extra
(``pip install segloc[serve]``). Every computation is a segloc library call.
"""

from segloc.serve.app import create_app, run
from segloc.serve.limits import Limits

__all__ = ["Limits", "create_app", "run"]

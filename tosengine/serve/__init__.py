"""tosengine serve: CloudEvents over HTTP into an Engine (docs/serve.md).

`create_app` is the ASGI app's factory (`uvicorn --factory tosengine.serve:create_app`, configured from
the environment); `tosengine serve` runs it on uvicorn with draining, JSON logs and SIGHUP reloads.
Names are imported when first used (PEP 562), so the command line loads the web server only to serve.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tosengine._lazy import lazy_names

if TYPE_CHECKING:
    from tosengine.serve.app import create_app as create_app
    from tosengine.serve.config import ServeConfig as ServeConfig

# Public name -> the module that defines it.
_HOMES = {"ServeConfig": "tosengine.serve.config", "create_app": "tosengine.serve.app"}

__all__ = sorted(_HOMES)


__getattr__, __dir__ = lazy_names("tosengine.serve", _HOMES, globals())

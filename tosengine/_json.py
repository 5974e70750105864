"""pydantic-core's JSON parser and encoder, without loading the rest of pydantic-core.

The engine reads events with pydantic-core's `from_json` (about 1.7x the standard library's) and encodes
with its `to_json`. Both live in the compiled module `pydantic_core._pydantic_core`; `import pydantic_core`
would also run the package's `__init__`, which imports `core_schema` and typing_extensions: about 20 ms
of every CLI run's start-up, for nothing the engine uses. So the compiled module is loaded on its own,
under its own name. A later `import pydantic` (the public Event model, tosengine/event_model.py) then
finds it in `sys.modules` and uses that same module: a PyO3 module is initialised once per process.
Should the package's layout change, the ordinary import is used.
"""

from __future__ import annotations

import sys
from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader
from importlib.util import find_spec, module_from_spec, spec_from_file_location
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

__all__ = ["from_json", "to_json"]

_NAME = "pydantic_core._pydantic_core"


def _compiled_module() -> ModuleType:
    loaded = sys.modules.get(_NAME)
    if loaded is not None:  # pydantic-core was imported already
        return loaded
    package = find_spec("pydantic_core")  # a top-level package is found without running its __init__
    locations = package.submodule_search_locations if package is not None else None
    for location in locations or ():
        for suffix in EXTENSION_SUFFIXES:
            path = Path(location) / f"_pydantic_core{suffix}"
            spec = spec_from_file_location(_NAME, path, loader=ExtensionFileLoader(_NAME, str(path)))
            if spec is None or spec.loader is None or not path.is_file():
                continue
            module = module_from_spec(spec)
            sys.modules[_NAME] = module
            spec.loader.exec_module(module)
            return module
    import pydantic_core._pydantic_core as compiled  # another layout: the ordinary way

    return compiled


if TYPE_CHECKING:
    from pydantic_core import from_json, to_json
else:
    _core = _compiled_module()
    from_json = _core.from_json
    to_json = _core.to_json

"""setuptools' build script, for the one thing pyproject.toml cannot say: the native build.

With TOSENGINE_NATIVE=1, the modules tosengine/_native.py names are compiled with mypyc into C
extensions (docs/performance.md, "The native build"); otherwise this builds the pure-Python package.
The in-tree build backend (build_backend/tosengine_build.py) decides and sets it: a wheel is native
unless TOSENGINE_NATIVE=0 is asked for, an editable install and an sdist never are.
"""

import os
import runpy

from setuptools import setup

native = os.environ.get("TOSENGINE_NATIVE") == "1"
ext_modules = []
if native:
    from mypyc.build import mypycify

    modules = runpy.run_path("tosengine/_native.py")["NATIVE_MODULES"]
    ext_modules = mypycify(
        # The build environment holds mypy, not the runtime dependencies: their types are Any here
        # (build_backend/mypyc.ini), which compiles to the interpreter's generic operations on them.
        ["--config-file", "build_backend/mypyc.ini", *(m.replace(".", "/") + ".py" for m in modules)],
        opt_level="3",
        group_name="tosengine",
        target_dir="build/native/c",
    )

# A native build works in a folder of its own: setuptools packs whatever its build folder holds, so a
# plain wheel built after a native one in the same checkout would otherwise carry the compiled modules.
setup(ext_modules=ext_modules, options={"build": {"build_base": "build/native"}} if native else {})

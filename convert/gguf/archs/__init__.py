"""One module per architecture family; importing this package registers them all.

Every module here is imported automatically (in name order), so adding a family is adding a file
that calls `convert.gguf.registry.register(Architecture(...))`.
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

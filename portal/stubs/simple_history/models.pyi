# The models module's one name we use, left untyped like the rest of the package.
from typing import Any

def __getattr__(name: str) -> Any: ...

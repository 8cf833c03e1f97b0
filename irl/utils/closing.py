"""`Closing`: a `with` block that calls the object's `close()` on exit."""

from __future__ import annotations

from typing import Any


class Closing:
  """Mixin for writers that hold files or threads: `with X(...) as x:`
  closes `x` on the way out, error or not."""

  def close(self) -> None:
    raise NotImplementedError

  def __enter__(self) -> Any:
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()

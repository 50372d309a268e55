"""How a caller names a model: ``tenant/name`` or a bare name in the caller's tenant."""

from __future__ import annotations

from dataclasses import dataclass

from openmaas.errors import RequestValidationError

__all__ = ["ModelRef"]


@dataclass(frozen=True)
class ModelRef:
    """A model reference as a caller wrote it: ``tenant/name`` or a bare name."""

    tenant: str | None
    name: str

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Parse ``tenant/name`` or ``name``."""
        tenant, _, name = text.rpartition("/")
        if not name or "/" in tenant:
            raise RequestValidationError(
                f"model id {text!r} is not valid; write 'tenant/name' or 'name'", field="model"
            )
        return cls(tenant or None, name)

    def __str__(self) -> str:
        return f"{self.tenant}/{self.name}" if self.tenant else self.name

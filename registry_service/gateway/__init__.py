"""The only layer that talks to MLflow."""

from registry_service.gateway.base import RegistryGateway

__all__ = ["RegistryGateway"]

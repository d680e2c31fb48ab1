"""The door (calls/door.py) names the services whose access is set apart as plain strings (it
imports no generated code); they are the generated descriptors' names."""

from __future__ import annotations

from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

from hapax.v1 import admin_service_pb2
from hapaxd.calls import door


def test_the_doors_service_names_are_the_descriptors() -> None:
    assert door.HEALTH_SERVICE == health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    assert door.REFLECTION_SERVICE == reflection.SERVICE_NAME
    admin = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
    assert door.ADMIN_SERVICE == admin

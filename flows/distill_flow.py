"""Prefect's entrypoint for deployments (prefect.yaml, `distill deploy`): the flow lives in distill.flow."""
from distill.flow import distill_flow

__all__ = ["distill_flow"]

"""Batched entropic optimal transport in torch (log domain, any device)."""

from optical.ot.cost import cost_matrix
from optical.ot.masses import idf_masses, uniform_masses
from optical.ot.sinkhorn import SinkhornResult, sinkhorn

__all__ = ["cost_matrix", "idf_masses", "uniform_masses", "sinkhorn", "SinkhornResult"]

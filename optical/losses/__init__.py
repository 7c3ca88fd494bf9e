"""Distillation losses, one small nn.Module each, and their weighted combination."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from optical.losses.base import DistillBatch
from optical.losses.infonce import InfoNCELoss
from optical.losses.mse import SentenceMSELoss
from optical.losses.token_ot import TokenOTLoss

LOSSES: dict[str, type[nn.Module]] = {
    "token_ot": TokenOTLoss,
    "mse": SentenceMSELoss,
    "infonce": InfoNCELoss,
}

# Losses whose solver settings default to the recipe's `ot:` section.
OT_LOSSES = {"token_ot"}


def _register_optional() -> None:
    try:
        from optical.losses.sigrot import SigrotLoss
    except ImportError:  # pragma: no cover - sigrot is part of the package; guard partial installs
        return
    LOSSES["sigrot"] = SigrotLoss


_register_optional()


def check_loss_params(name: str, params: dict) -> str | None:
    """None if `params` are constructor arguments of loss `name`, else what is wrong."""
    accepted = [p for p in inspect.signature(LOSSES[name].__init__).parameters if p != "self"]
    unknown = [k for k in params if k not in accepted]
    if unknown:
        return f"unknown parameter {unknown[0]!r} for loss {name!r} (accepted: {', '.join(accepted)})"
    return None


class DistillationObjective(nn.Module):
    """Σ_k weight_k · loss_k(batch); `forward` returns (total, {name: value})."""

    def __init__(self, terms: list[tuple[str, float, nn.Module]]):
        super().__init__()
        self.names = [name for name, _, _ in terms]
        self.weights = [weight for _, weight, _ in terms]
        self.losses = nn.ModuleList([module for _, _, module in terms])

    def forward(self, batch: DistillBatch) -> tuple[torch.Tensor, dict[str, float]]:
        total = None
        parts = {}
        for name, weight, loss in zip(self.names, self.weights, self.losses):
            value = loss(batch)
            parts[name] = float(value.detach())
            total = weight * value if total is None else total + weight * value
        return total, parts

    @property
    def needs_english_student(self) -> bool:
        return any(isinstance(m, (SentenceMSELoss, TokenOTLoss)) and m.english for m in self.losses)

    @property
    def needs_english_tokens(self) -> bool:
        return any(isinstance(m, TokenOTLoss) and m.english for m in self.losses)


def build_objective(loss_terms, ot_config) -> DistillationObjective:
    """Instantiate the recipe's loss terms; OT losses take their defaults from `ot_config`."""
    terms = []
    for term in loss_terms:
        params = dict(term.params)
        if term.name in OT_LOSSES:
            defaults = dict(epsilon=ot_config.epsilon, rho=ot_config.rho, max_iter=ot_config.max_iter,
                            tol=ot_config.tol, cost=ot_config.cost, gradient=ot_config.gradient,
                            solver=ot_config.solver)
            params = {**defaults, **params}
        terms.append((term.name, term.weight, LOSSES[term.name](**params)))
    return DistillationObjective(terms)


__all__ = ["DistillBatch", "LOSSES", "build_objective", "DistillationObjective", "TokenOTLoss",
           "SentenceMSELoss", "InfoNCELoss", "check_loss_params"]

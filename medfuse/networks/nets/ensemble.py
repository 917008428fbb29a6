# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""A deep ensemble as one network: the mean of its members' class probabilities.

Lakshminarayanan et al., "Simple and Scalable Predictive Uncertainty Estimation using Deep Ensembles", NeurIPS
2017; Ovadia et al., NeurIPS 2019, show ensembles keep their calibration under dataset shift better than
Monte-Carlo dropout. The members are averaged in **probability** space (mean of the softmax over dimension 1),
not logit space: the mean of probabilities is what the uncertainty decomposition below is defined on.
``forward`` returns the log of that mean, so the usual softmax post-transform gives the mean back, as medfuse's
Monte-Carlo dropout inferer does; the output has the members' shape, ``(B, C)`` or ``(B, C, *spatial)``.
"""

from __future__ import annotations

import copy
from typing import List, Optional, Sequence

import torch
import torch.nn as nn

from medfuse.networks.uncertainty import mc_dropout_outputs, predictive_entropy

__all__ = ["EnsembleNet"]


class EnsembleNet(nn.Module):
    """Mean of the members' softmax probabilities; ``forward`` returns its log.

    Args:
        members: the trained member networks (same output shape), or None with ``member`` + ``num_members``.
        member: one network to copy ``num_members`` times (how bundle configs build an ensemble whose weights come
            from one state dict, ``members.<i>.*``).
        num_members: number of copies of ``member``.
        eps: floor of the mean probability before the log. Defaults to 1e-12.

    Raises:
        ValueError: fewer than two members, or both / neither of ``members`` and ``member`` given.

    Examples::

        >>> net = EnsembleNet([DualCrossAttentionNet(...), DualCrossAttentionNet(...)])
        >>> net(x).softmax(1)  # mean probabilities, (B, C)
        >>> net.predict_with_uncertainty(x, samples=0)["member_disagreement"]
    """

    reports_members = True

    def __init__(self, members: Optional[Sequence[nn.Module]] = None, member: Optional[nn.Module] = None,
                 num_members: int = 0, eps: float = 1e-12) -> None:
        super().__init__()
        if (members is None) == (member is None):
            raise ValueError("give either members (a list of networks) or member and num_members")
        if members is None:
            if int(num_members) < 2:
                raise ValueError(f"an ensemble needs at least two members, got num_members={num_members}")
            members = [member] + [copy.deepcopy(member) for _ in range(int(num_members) - 1)]
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.eps = float(eps)
        layer = getattr(members[0], "cam_layer", None)
        if isinstance(layer, str):
            # medfuse.visualize.compute_cam reads this name as "the mean of every member's CAM at <layer>"
            self.cam_layer = f"members.0.{layer}"

    def member_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's softmax probabilities, ``(M, B, C, ...)``."""
        out: List[torch.Tensor] = []
        for m in self.members:
            out.append(torch.softmax(m(x).float(), dim=1))
        return torch.stack(out, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.member_probs(x).mean(dim=0).clamp_min(self.eps))

    @torch.jit.unused
    def predict_with_uncertainty(self, x: torch.Tensor, samples: int = 0, seed: Optional[int] = None) -> dict:
        """Mean probabilities and the uncertainty of a classifier ensemble, ``(B, C)`` members.

        With ``samples`` > 0 every member runs Monte-Carlo dropout (``samples`` passes; member ``i`` seeded with
        ``seed + i`` when ``seed`` is given). In nats:

        * ``entropy``: total predictive entropy ``H[p]`` of the ensemble mean ``p``;
        * ``mutual_info_members``: ``H[p] - mean_m H[p_m]``, the members' disagreement as information (``p_m`` a
          member's (MC-mean) probabilities);
        * ``mutual_info``: all epistemic uncertainty, ``H[p]`` minus the mean entropy of every single pass
          (members x dropout passes): ``mutual_info_members`` plus the members' mean MC-dropout mutual information
          (equal to ``mutual_info_members`` without dropout sampling);
        * ``member_disagreement``: the share of members whose arg-max differs from the ensemble's, in [0, 1).

        Returns:
            ``{"probs", "entropy", "mutual_info", "mutual_info_members", "member_disagreement"}``, each ``(B, ...)``.
        """
        member_p, member_mi = [], []
        for i, m in enumerate(self.members):
            if int(samples) > 0:
                r = mc_dropout_outputs(m, x, int(samples), seed=None if seed is None else int(seed) + i)
                member_p.append(r["pred"].float().exp())
                member_mi.append(r["mutual_info"].float())
            else:
                with torch.no_grad():
                    member_p.append(torch.softmax(m(x).float(), dim=1))
        p_m = torch.stack(member_p, dim=0)
        p = p_m.mean(dim=0)
        total = predictive_entropy(p.movedim(1, -1))
        mi_members = (total - predictive_entropy(p_m.movedim(2, -1)).mean(dim=0)).clamp_min(0.0)
        mi = mi_members + (torch.stack(member_mi).mean(dim=0) if member_mi else 0.0)
        disagreement = (p_m.argmax(dim=2) != p.argmax(dim=1).unsqueeze(0)).float().mean(dim=0)
        return {"probs": p, "entropy": total, "mutual_info": mi, "mutual_info_members": mi_members,
                "member_disagreement": disagreement}

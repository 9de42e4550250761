"""Metrics: two tensors in, a frozen dataclass of numbers out. Nothing here prints or judges (gate.py judges).

Conventions: `ref` is Transformers' tensor, `ours` is gptoss_model's; d = ours - ref. Hidden-state tensors arrive as
[N, C] (N tokens of all prompts stacked, C channels) with a parallel list saying which (prompt, position) each row
is, so the location of the worst element can be reported.
"""

import math
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Metrics:
    max_abs: float  # max |d|
    where: dict  # location of max |d|: {"prompt", "position", "channel"}
    mean_abs: float  # mean |d|
    rel_l2: float  # ||d|| / ||ref||
    nmse_db: float  # 10·log10(mean d² / var(ref)); -inf when identical
    nonfinite: int = 0  # NaN/Inf elements in ours

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("nmse_db", "rel_l2", "max_abs", "mean_abs"):
            d[key] = json_number(d[key])
        return d


def json_number(value: float):
    """A float for report.json: +inf as the string "inf", -inf as null (NMSE dB of identical tensors)."""
    if math.isinf(value):
        return None if value < 0 else "inf"
    return value


def earliest_row(flags: torch.Tensor, rows: list) -> dict | None:
    """flags [N] bool -> the earliest flagged {"prompt", "position"} (lowest position, then prompt), or None."""
    flagged = [rows[n] for n in torch.nonzero(flags).flatten().tolist()]
    if not flagged:
        return None
    prompt, position = min(flagged, key=lambda r: (r[1], r[0]))
    return {"prompt": int(prompt), "position": int(position)}


def measure(ours: torch.Tensor, ref: torch.Tensor, rows: list) -> Metrics:
    """ours/ref [N, C]; rows[n] = (prompt, position) of row n."""
    ours, ref = ours.double(), ref.double()
    diff = (ours - ref).abs()
    nonfinite = ~torch.isfinite(ours)
    if nonfinite.any():  # a NaN/Inf in ours is an infinite error wherever it sits
        diff = diff.masked_fill(nonfinite, math.inf)
    flat_index = int(diff.argmax())
    row, channel = divmod(flat_index, diff.shape[1])
    prompt, position = rows[row]
    max_abs = float(diff.max())
    ref_norm, diff_norm = float(ref.norm()), float(diff.norm())
    rel_l2 = diff_norm / ref_norm if ref_norm > 0 else (0.0 if diff_norm == 0 else math.inf)
    variance = float(ref.var(unbiased=False)) if ref.numel() > 1 else 0.0
    mse = float(diff.pow(2).mean())
    nmse_db = 10 * math.log10(mse / variance) if mse > 0 and variance > 0 else (-math.inf if mse == 0 else math.inf)
    return Metrics(
        max_abs=max_abs,
        where={"prompt": int(prompt), "position": int(position), "channel": int(channel)},
        mean_abs=float(diff.mean()),
        rel_l2=rel_l2,
        nmse_db=nmse_db,
        nonfinite=int(nonfinite.sum()),
    )


@dataclass(frozen=True)
class RouterAgreement:
    tokens: int
    same_set: int  # tokens whose top-k expert set is identical
    near_tie: int  # tokens that differ, but where the reference's k-th and (k+1)-th logits are within eps
    mismatched: int  # tokens that differ for real
    eps: float
    first_mismatch: dict | None = None  # the earliest {"prompt", "position"} routed differently for real

    @property
    def agreement(self) -> float:
        return self.same_set / self.tokens if self.tokens else 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "agreement": self.agreement}


def near_tie_eps(dtype: torch.dtype, logits: torch.Tensor) -> float:
    """A routing flip is a near-tie when the gap between the k-th and (k+1)-th reference logit is within a few
    units in the last place of the compute dtype at the logits' magnitude."""
    ulp = torch.finfo(dtype).eps * max(float(logits.abs().max()), 1.0)
    return 4 * ulp


def router_agreement(ours_idx, ref_idx, ref_logits, dtype, rows: list | None = None) -> RouterAgreement:
    """ours_idx/ref_idx [N, K] selected experts, ref_logits [N, E]; rows[n] = (prompt, position) of row n."""
    k = ref_idx.shape[1]
    same = (ours_idx.sort(dim=1).values == ref_idx.sort(dim=1).values).all(dim=1)  # [N]
    eps = near_tie_eps(dtype, ref_logits)
    if ref_logits.shape[1] > k:
        top = ref_logits.float().topk(k + 1, dim=1).values  # [N, K+1]
        tie = (top[:, k - 1] - top[:, k]).abs() <= eps
    else:
        tie = torch.zeros_like(same)
    real = ~same & ~tie
    return RouterAgreement(
        tokens=int(same.numel()),
        same_set=int(same.sum()),
        near_tie=int((~same & tie).sum()),
        mismatched=int(real.sum()),
        eps=eps,
        first_mismatch=earliest_row(real, rows) if rows is not None else None,
    )


@dataclass(frozen=True)
class LogitMetrics:
    diff: Metrics
    kl_mean: float  # KL(ref ‖ ours) in nats, mean over positions
    kl_max: float
    top1_agreement: float  # fraction of positions with the same argmax
    top5_overlap: float  # mean |top5(ref) ∩ top5(ours)| / 5

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "diff"}, **self.diff.to_dict()}


def measure_logits(ours: torch.Tensor, ref: torch.Tensor, rows: list) -> LogitMetrics:
    """ours/ref [N, V]."""
    diff = measure(ours, ref, rows)
    log_p = torch.log_softmax(ref.double(), dim=-1)
    log_q = torch.log_softmax(ours.double(), dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # [N]
    k = min(5, ref.shape[-1])
    top_ref, top_ours = ref.topk(k, dim=-1).indices, ours.topk(k, dim=-1).indices  # [N, 5]
    overlap = (top_ref[:, :, None] == top_ours[:, None, :]).any(-1).float().sum(-1) / k  # [N]
    return LogitMetrics(
        diff=diff,
        kl_mean=float(kl.mean()),
        kl_max=float(kl.max()),
        top1_agreement=float((ref.argmax(-1) == ours.argmax(-1)).float().mean()),
        top5_overlap=float(overlap.mean()),
    )

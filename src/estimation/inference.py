"""Inference after an estimation: the table of estimates, their standard errors, and how converged.

For the convex models (least squares, logit) and their unpenalized objectives, everything follows
statsmodels' conventions, so a table here reads as `OLS(y, X).fit(cov_type=...)` or
`Logit(y, X).fit(cov_type=...)` would print it (checked to 1e-6 in tests/test_inference.py):

- OLS: classical s²(X'X)⁻¹ with s² = e'e / (n − k); HC0 (X'X)⁻¹ X' diag(e²) X (X'X)⁻¹, HC1 = HC0 ×
  n / (n − k), HC2 and HC3 with e² / (1 − h_ii) and e² / (1 − h_ii)²; the statistic is t(n − k) for
  classical and z (normal) for the robust choices, as statsmodels' default `use_t`.
- Logit: classical the inverse observed information (X' diag(p(1 − p)) X)⁻¹; HC0 the sandwich
  H⁻¹ (Σ s_i s_i') H⁻¹ with scores s_i = (y_i − p_i) x_i; statsmodels' HC1–HC3 for Logit are the
  same HC0 (no leverage or small-sample correction), and so are these; the statistic is z.
- cluster: the scores summed within each group, Σ_g s_g s_g', times statsmodels' correction
  G / (G − 1) × (n − 1) / (n − k).

Standard errors are evaluated at the run's estimate (its restored parameters), on the training split
it was fitted on, in the coordinates it was trained in, and then mapped, with the estimates and θ*,
back to the data's own units through the training split's standardization (intercept included):
with x̃_j = (x_j − m_j) / s_j, b_j = θ_j / s_j and b_const = θ_const − Σ_j θ_j m_j / s_j, a linear
map A, so Cov(b) = A Cov(θ) A'. (Every covariance here is equivariant under such a map, so this
equals computing it on the data in natural units, without that design's conditioning.)
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector

from src.config import Cov
from src.data import Data
from src.errors import ConfigError
from src.estimation.reference import Reference, design, objective_terms
from src.models import LinearRegression, LogisticRegression, outcome

Columns = dict[str, list[Any]]  # a table: column name → its values, row by row (no pandas: startup time)

COLUMNS = ["term", "estimate", "reference", "std_error", "statistic", "p_value", "ci_low", "ci_high"]
ARTIFACT = "estimates.csv"
MAX_HESSIAN = 200  # parameters up to which the Hessian's condition number is reported
DIGITS = 16.0  # float64 agreement: where θ equals θ* to the last bit


@dataclass(frozen=True)
class Settings:
    """What the run was fitted with: what its `converged` needs, and what a warning must not
    recommend again (the method or setting already in use)."""

    optimizer: str = ""  # the optimizer's class name: Newton, LBFGS, SGD, ...
    dtype: str = "float64"
    stopping_threshold: float | None = 1e-8
    min_digits: float = 7.0  # inference.min_digits: digits of agreement with θ* that `converged` needs


def to_csv(table: Columns) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table)
    writer.writerows(zip(*table.values(), strict=True))
    return out.getvalue()


@dataclass(frozen=True)
class Estimates:
    table: Columns  # COLUMNS, one row per term, in the data's own units
    certificate: dict[str, float]  # how converged: grad_norm, rel_opt_gap, digits, hessian_cond
    footer: list[str]  # what the covariance is, on which rows, and the certificate, in words
    converged: bool
    standardization: Columns | None = None  # column, mean, std: the map back to the data's units
    warnings: list[str] = field(default_factory=list)

    def format(self) -> str:
        """The table as statsmodels' summary shows it, right-aligned, then the footer (warnings apart)."""
        formats = {"term": "{}", "estimate": "{:.10g}", "reference": "{:.10g}", "p_value": "{:.3g}"}
        cells = {
            column: [
                "-" if isinstance(v, float) and math.isnan(v) else formats.get(column, "{:.4g}").format(v)
                for v in values
            ]
            for column, values in self.table.items()
        }
        widths = {column: max(len(column), *map(len, shown)) for column, shown in cells.items()}
        lines = [[c.rjust(widths[c]) for c in cells]]
        lines += [
            [cell.rjust(widths[c]) for c, cell in zip(cells, row, strict=True)]
            for row in zip(*cells.values(), strict=True)
        ]
        return "\n".join([*(" ".join(line) for line in lines), *self.footer])


def unavailable(model: nn.Module, l2: float) -> str | None:
    """Why `model` gets no standard errors, or None if it gets them."""
    if not isinstance(model, LinearRegression):
        name = type(model).__name__
        return f"{name} is not an estimator with a sampling theory here (not convex, not identified)"
    if l2 > 0:
        return (
            f"regularization.l2={l2:g} penalizes the estimate: it is biased, and the classical and "
            "sandwich formulas describe the unpenalized estimator"
        )
    return None


def check(cov: Cov | None, model: nn.Module, l2: float) -> None:
    """Refuse standard errors asked for (inference.cov given) where there are none; before any run."""
    reason = unavailable(model, l2)
    if cov is not None and reason is not None:
        raise ConfigError(
            f"inference.cov={cov.value}: no standard errors: {reason}; leave inference.cov unset"
        )


def natural_units(data: Data, bias: bool) -> tuple[list[str], Tensor]:
    """The terms in the data's own units and the map A from the trained parameters to them."""
    names = list(data.columns)
    k = len(names)
    scaling = data.standardization
    mean = torch.zeros(k, dtype=torch.float64) if scaling is None else scaling.mean.double()
    std = torch.ones(k, dtype=torch.float64) if scaling is None else scaling.std.double()
    p = k + bias
    A = torch.zeros(p, p, dtype=torch.float64)
    A[:k, :k] = torch.diag(1 / std)
    const = next((c for c in ("const", "Intercept") if c in names), None)  # data.intercept's, formula's
    if bias:
        names.append("bias" if const else "const")
        const = const or "const"
        A[k, k] = 1.0
    shift = -mean / std  # what centring moved into the intercept
    if const:
        A[names.index(const), :k] += shift
    elif bool((mean != 0).any()):  # centred without an intercept: the fit still has one, implied
        names.append("const")
        A = torch.cat([A, torch.cat([shift, torch.zeros(p - k, dtype=torch.float64)])[None]])
    return names, A


def covariance(
    cov: Cov, logit: bool, Z: Tensor, y: Tensor, theta: Tensor, groups: Tensor | None, absorbed: int = 0
) -> Tensor:
    """Cov(θ̂) in the coordinates of Z, by statsmodels' definitions (see the module's docstring).
    `absorbed`: the fixed effects demeaned out of Z and y, which count as parameters in n − k."""
    n, k = Z.shape[0], Z.shape[1] + absorbed
    if logit:
        target, frequency = outcome(y)
        f = torch.ones_like(target) if frequency is None else frequency
        prob = torch.sigmoid(Z @ theta)
        residual = target - prob
        bread = torch.linalg.inv((Z.T * (f * prob * (1 - prob))) @ Z)  # inverse observed information
        if cov is Cov.classical:
            return bread
        # statsmodels' HC1–HC3 for Logit (and GLM) are HC0. A row of weight f is f rows: f s_i s_i'
        # in HC0, and f s_i in its cluster's score sum (GLM's freq_weights, both)
        weights = f * residual**2
        residual = f * residual
    else:
        Q, R = torch.linalg.qr(Z)
        R_inv = torch.linalg.solve_triangular(R, torch.eye(Z.shape[1], dtype=Z.dtype), upper=True)
        bread = R_inv @ R_inv.T  # (Z'Z)⁻¹ without forming Z'Z
        residual = y - Z @ theta
        leverage = (Q**2).sum(1)
        if cov is Cov.classical:
            return bread * float(residual @ residual) / (n - k)
        weights = {
            Cov.HC0: residual**2,
            Cov.HC1: residual**2 * n / (n - k),
            Cov.HC2: residual**2 / (1 - leverage),
            Cov.HC3: residual**2 / (1 - leverage) ** 2,
        }.get(cov, residual**2)
    if cov is Cov.cluster:
        assert groups is not None
        labels, index = groups.unique(return_inverse=True)
        scores = torch.zeros(len(labels), Z.shape[1], dtype=Z.dtype).index_add_(
            0, index, Z * residual[:, None]
        )
        G = len(labels)
        correction = G / (G - 1) * (n - 1) / (n - k)
        return correction * bread @ (scores.T @ scores) @ bread
    return bread @ ((Z.T * weights) @ Z) @ bread


def digits(theta: Tensor, reference: Tensor) -> float:
    """min_j −log10(|θ_j − θ*_j| / |θ*_j|) over the coefficients with θ*_j ≠ 0, at most DIGITS."""
    nonzero = reference != 0
    if not bool(nonzero.any()):
        return math.nan
    relative = ((theta - reference).abs() / reference.abs())[nonzero]
    return float(torch.clamp(-torch.log10(relative), max=DIGITS).min())


@dataclass(frozen=True)
class Fit:
    """A fitted linear or logistic model, in float64 on the CPU, with the map to the data's units."""

    logit: bool
    Z: Tensor  # the training design (with a column of ones for the model's bias)
    y: Tensor
    theta: Tensor  # the trained parameters
    names: list[str]  # the terms in the data's own units
    A: Tensor  # θ → b, the estimates in the data's own units
    b: Tensor
    b_ref: Tensor  # θ* mapped the same way (NaN without a reference)
    absorbed: int = 0  # fixed effects demeaned out of Z and y (data.absorb): parameters all the same

    @property
    def dims(self) -> tuple[int, int]:
        """n and k as the degrees of freedom n − k count them: the absorbed fixed effects included."""
        return self.Z.shape[0], self.Z.shape[1] + self.absorbed


def fitted(model: LinearRegression, data: Data, reference: Reference | None) -> Fit:
    bias = model.bias is not None
    Z, y = design(data.train.X, bias).cpu(), data.train.y.double().cpu()
    theta = parameters_to_vector(model.parameters()).detach().double().cpu()
    names, A = natural_units(data, bias)
    b = A @ theta
    b_ref = A @ reference.theta.cpu() if reference is not None else torch.full_like(b, math.nan)
    absorbed = 0 if data.absorbed is None else data.absorbed[1]
    return Fit(isinstance(model, LogisticRegression), Z, y, theta, names, A, b, b_ref, absorbed)


def no_errors(model: nn.Module, fit: Fit, reference: Reference | None, l2: float) -> str | None:
    """Why this fit gets no standard errors, or None if it gets them."""
    n, k = fit.dims
    reason = unavailable(model, l2)
    if reason is None and fit.logit and reference is None:
        reason = "the logit MLE does not exist on these data (classes separable on the training split)"
    if reason is None and n <= k:
        reason = f"{n} rows leave no residual degrees of freedom for {k} parameters"
    return reason


def uses_t(fit: Fit, cov: Cov) -> bool:
    return not fit.logit and cov is Cov.classical  # statsmodels' default use_t


def table_of(fit: Fit, cov: Cov, groups: Tensor | None, reason: str | None) -> Columns:
    """COLUMNS: estimates, reference, and, unless `reason`, standard errors, statistics, p-values, CIs."""
    from scipy import special  # statsmodels' own t and normal distributions; lighter than scipy.stats

    b = fit.b
    if reason is None:
        n, k = fit.dims
        V = fit.A @ covariance(cov, fit.logit, fit.Z, fit.y, fit.theta, groups, fit.absorbed) @ fit.A.T
        se = V.diagonal().clamp(min=0).sqrt()
        statistic = b / se
        minus = -statistic.abs().numpy()
        use_t = uses_t(fit, cov)
        p_value = torch.from_numpy(2 * (special.stdtr(n - k, minus) if use_t else special.ndtr(minus)))
        q = float(special.stdtrit(n - k, 0.975) if use_t else special.ndtri(0.975))
        ci_low, ci_high = b - q * se, b + q * se
    else:
        se = statistic = p_value = ci_low = ci_high = torch.full_like(b, math.nan)
    values = (b, fit.b_ref, se, statistic, p_value, ci_low, ci_high)
    return {"term": fit.names, **{c: v.tolist() for c, v in zip(COLUMNS[1:], values, strict=True)}}


def certify(fit: Fit, reference: Reference | None, l2: float) -> dict[str, float]:
    """How converged: ‖∇L‖, the relative optimality gap and digits of agreement with θ*, cond(∇²L)."""
    loss, grad, hessian = objective_terms(fit.logit, fit.Z, fit.y, fit.theta, l2)
    certificate = {"estimate_grad_norm": float(torch.linalg.vector_norm(grad))}
    if reference is not None:
        certificate["estimate_rel_opt_gap"] = (loss - reference.loss) / max(1.0, abs(reference.loss))
        certificate["estimate_digits"] = digits(fit.b, fit.b_ref)
    if fit.Z.shape[1] <= MAX_HESSIAN:
        certificate["hessian_cond"] = float(torch.linalg.cond(hessian))
    return certificate


def estimator(fit: Fit, data: Data) -> tuple[str, list[str]]:
    """The estimator by its name, and the weighting convention in words where there are weights."""
    column = data.weighted_by
    if column is None:
        return ("logit (MLE)" if fit.logit else "OLS"), []
    if fit.logit:
        total = float(outcome(fit.y)[1].sum())  # type: ignore[union-attr]
        return "weighted logit (MLE)", [
            f"weights {column!r} (sum {total:.6g}) are frequency weights: a row of weight w counts as w "
            "rows, statsmodels' GLM(family=Binomial(), freq_weights=w)"
        ]
    convention = "minimizes sum w (y - x b)^2, statsmodels' WLS(weights=w) (w proportional to 1/Var(error))"
    return "WLS", [f"weights {column!r}: {convention}"]


def footer_of(fit: Fit, data: Data, cov: Cov, reason: str | None) -> list[str]:
    """What the covariance is, on which rows, and the units, in words."""
    n, k = fit.dims
    full = len(data.val) == 0 and len(data.test) == 0
    rows = f"{n} rows ({'the full sample' if full else 'the training split'})"
    name, weighting = estimator(fit, data)
    if reason is None:
        kind = cov.value
        if data.train.groups is not None and cov is Cov.cluster:
            kind += f" ({len(data.train.groups.unique())} groups)"
        test = f"t({n - k})" if uses_t(fit, cov) else "z (normal)"
        footer = [f"{name} on {rows}; covariance: {kind}; statistic: {test}; 95% CI", *weighting]
    else:
        footer = [f"{name} on {rows}; no standard errors: {reason}", *weighting]
    if data.absorbed is not None:
        column, groups = data.absorbed
        footer.append(
            f"fixed effects of {column!r} absorbed ({groups} groups, within transformation): slopes and "
            f"errors as with C({column}) dummies, their {groups} parameters counted in n - k"
        )
    if data.standardization is not None:
        footer.append(
            "estimates, reference and standard errors in the data's own units "
            "(mapped back from the standardized features)"
        )
    return footer


def certificate_line(certificate: dict[str, float], stop_reason: str) -> str:
    words = [f"||grad L|| = {certificate['estimate_grad_norm']:.3g}"]
    if "estimate_rel_opt_gap" in certificate:
        words += [
            f"(L - L*)/max(1,|L*|) = {certificate['estimate_rel_opt_gap']:.3g}",
            f"digits of agreement with theta* = {certificate['estimate_digits']:.1f}",
        ]
    if "hessian_cond" in certificate:
        words.append(f"cond(Hessian) = {certificate['hessian_cond']:.3g}")
    return f"stopped: {stop_reason}; {', '.join(words)}"


def advice(settings: Settings, loose: bool) -> list[str]:
    """What could still help, leaving out what the run already did. `loose`: the loss converged but
    the coefficients did not (a flat, ill-conditioned objective), which only a tighter threshold or
    Newton's steps fix; otherwise the run stopped early."""
    hints = []
    if not loose:
        hints.append("train longer (trainer.max_epochs, trainer.patience)")
    elif settings.stopping_threshold is None or settings.stopping_threshold > 1e-15:
        hints.append("lower trainer.stopping_threshold (e.g. 1e-15)")
    if settings.dtype != "float64":
        hints.append("train in float64 (trainer.dtype=float64)")
    choices = {"newton": "Newton"} if loose else {"newton": "Newton", "lbfgs": "LBFGS"}
    methods = [f"optimizer={name}" for name, cls in choices.items() if cls != settings.optimizer]
    if methods:
        hints.append(f"use {' or '.join(methods)}")
    return hints


def warnings_for(
    certificate: dict[str, float], stop_reason: str, settings: Settings = Settings()
) -> list[str]:
    """Why these numbers are not yet the estimator's, if they are not."""
    if stop_reason != "converged":
        return [
            f"WARNING: the run did not converge (stopped: {stop_reason}); these are the optimizer's "
            f"numbers, not yet the estimator's: {'; '.join(advice(settings, loose=False))}"
        ]
    digits_ = certificate.get("estimate_digits", DIGITS)
    if digits_ < settings.min_digits:
        loose = advice(settings, loose=True) or [
            "the design may hold no more digits in this dtype (see cond(Hessian)): standardize the "
            "features (data.standardize=true) where the data allow, or accept fewer with "
            "inference.min_digits"
        ]
        return [
            f"WARNING: the loss converged, but the estimates agree with theta* to only {digits_:.1f} "
            f"digits (inference.min_digits={settings.min_digits:g}; on an ill-conditioned problem a tiny "
            f"loss gap leaves the coefficients loose): {'; '.join(loose)}"
        ]
    return []


def estimate(
    model: nn.Module,
    data: Data,
    reference: Reference | None,
    cov: Cov | None,
    l2: float,
    stop_reason: str,
    settings: Settings = Settings(),
) -> Estimates | None:
    """The table of estimates for a linear or logistic model (None for other models)."""
    if not isinstance(model, LinearRegression):
        return None
    fit = fitted(model, data, reference)
    reason = no_errors(model, fit, reference, l2)
    cov = cov or Cov.classical
    table = table_of(fit, cov, data.train.groups, reason)
    certificate = certify(fit, reference, l2)
    footer = [*footer_of(fit, data, cov, reason), certificate_line(certificate, stop_reason)]
    warnings = warnings_for(certificate, stop_reason, settings)
    scaling = data.standardization
    standardization = None
    if scaling is not None:
        standardization = {
            "column": list(data.columns),
            "mean": scaling.mean.tolist(),
            "std": scaling.std.tolist(),
        }
    return Estimates(table, certificate, footer, not warnings, standardization, warnings)

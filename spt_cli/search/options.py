"""The search's option values and their one check (used by the CLI's preflight and the
architect; no torch import, so a typo is caught before anything heavy loads)."""

from __future__ import annotations

from typing import Any

from spt_cli.errors import ConfigError

ORDERS = ("first", "second")
HESSIANS = ("central", "forward")


def check_search_options(scfg: Any) -> None:
    """Refuse unknown ``search.order`` / ``search.hessian`` values with a one-line error."""
    if str(scfg.order) not in ORDERS:
        raise ConfigError(
            f"search.order={scfg.order} is not known; use search.order=first or second"
        )
    if str(scfg.hessian) not in HESSIANS:
        raise ConfigError(
            f"search.hessian={scfg.hessian} is not known; use search.hessian=central or forward"
        )

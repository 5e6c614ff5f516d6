"""Rate limits for the endpoints that make accounts or take a secret (sign-up, accepting an invitation, minting a
personal token, one-time approval links) and for the costly audit ones (verifying the chain, signing checkpoints).

A view opts in with `throttle_classes = [Throttle]` and a `throttle_scope`; the rates are settings
(AILERON_THROTTLE_<SCOPE>, aileron_site.config.THROTTLE_DEFAULTS). Requests are counted per person when signed
in, else per client address, in the cache (Redis in the split topology, so every API process counts together).
Over the rate: 429 problem+json with Retry-After (aileron_site.problems).
"""

from __future__ import annotations

from rest_framework.throttling import ScopedRateThrottle


class Throttle(ScopedRateThrottle):
    """DRF's scoped throttle: the view's `throttle_scope` names its rate."""

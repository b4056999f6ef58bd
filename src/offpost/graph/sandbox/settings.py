"""The sandbox's switches, read and changed through ``/_sandbox/settings``.

Defaults imitate real Graph with "Require App Secret" on; budgets are generous
so benchmarks are not throttled unless a test lowers them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from offpost.graph.proof import PROOF_MAX_AGE_S


class SandboxSettings(BaseModel):
    """Behaviour switches of one sandbox (immutable; replace to change)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: "Require App Secret": user/Page-token calls without a proof fail with 100.
    require_proof: bool = True
    #: ``(#506) Duplicate status message`` for the same message twice in a row on a Page.
    duplicate_detection: bool = True
    #: Leave ``expires_in`` out of token responses (docs/graph.md).
    omit_expires_in: bool = False
    #: Extra delay of every publish (``POST /{page}/feed|photos|videos``, the finish of a
    #: video or reel), awaited, never blocking.
    publish_latency_ms: int = Field(default=0, ge=0, le=600_000)
    #: Allowed ``scheduled_publish_time`` window, seconds from now (docs/graph.md).
    schedule_min_s: int = Field(default=600, ge=0)
    schedule_max_s: int = Field(default=30 * 86_400, ge=0)
    #: A timed proof older than this (real wall clock) is rejected.
    proof_max_age_s: int = Field(default=PROOF_MAX_AGE_S, ge=0)
    #: How far in the future ``appsecret_time`` may be (client clocks run ahead).
    proof_future_skew_s: int = Field(default=30, ge=0)
    #: Rolling window of the usage counters, sandbox-clock seconds.
    usage_window_s: int = Field(default=3600, ge=1)
    #: Calls per window with user/app tokens before ``(#4)``.
    app_call_budget: int = Field(default=100_000, ge=1)
    #: Calls per window on one Page before ``(#32)`` / ``(#80001)``.
    page_call_budget: int = Field(default=100_000, ge=1)
    #: Per-Page budgets that replace ``page_call_budget`` for those Pages.
    page_call_budgets: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    #: The ``facebook-api-version`` answered to unversioned calls.
    api_version: str = Field(default="v26.0", pattern=r"^v\d+\.\d+$")
    #: Lifetime of ``/oauth/client_code`` codes, sandbox-clock seconds.
    code_ttl_s: int = Field(default=600, ge=1)
    #: Fetch ``url`` / ``file_url`` media to learn their size and SHA-256 (placeholder
    #: hosts such as example.com are never fetched; see :mod:`.media`).
    fetch_media: bool = True
    #: How long one media download may take before it counts as unreachable.
    media_fetch_timeout_s: float = Field(default=10.0, gt=0, le=300)
    #: The size of the chunk windows resumable ``/videos`` uploads are asked for.
    video_chunk_bytes: int = Field(default=4 * 1024 * 1024, ge=1)
    #: Reels published through the API per Page in a moving 24 h (Meta: 30).
    reels_per_day: int = Field(default=30, ge=1)

    def page_budget(self, page_id: str) -> int:
        """The calls per window allowed on this Page."""
        return self.page_call_budgets.get(page_id, self.page_call_budget)

    @model_validator(mode="after")
    def _check_window(self) -> SandboxSettings:
        if self.schedule_min_s > self.schedule_max_s:
            raise ValueError("schedule_min_s must not exceed schedule_max_s")
        return self

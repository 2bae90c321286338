"""Errors of the performance agent's library.

All derive from :class:`trellis.errors.WorkflowError`, so a workflow node that calls into this
library can match them by name in ``catch`` and ``retry.on``:

* ``ScrapeError``: a ``/metrics`` endpoint could not be read (refused, timed out, answered with
  an error status, or sent something that is not Prometheus text). A scrape error is an
  *error*, never a verdict: the canary gate counts it apart from failing checks.
* ``MetricsFormatError``: text was read but cannot be used (not Prometheus exposition, or no
  vLLM / TGI / SGLang family in it, or two server types mixed). Not retryable.
* ``RolloutTargetError``: applying configuration, setting weights or restoring failed on an
  instance's admin endpoint.
* ``AnalysisError``: the inputs of an analysis or a judgment are unusable (too few scrapes,
  scrapes of different servers).
"""

from __future__ import annotations

from typing import Any

from trellis.errors import WorkflowError


class ScrapeError(WorkflowError):
    """A ``/metrics`` endpoint could not be scraped. Retrying may help.

    Args:
        url: the endpoint that failed.
        message: what went wrong.
        status: the HTTP status when the endpoint answered, else ``None``.
    """

    name = "ScrapeError"
    status = 502

    def __init__(self, url: str, message: str, *, status: int | None = None, **kwargs: Any) -> None:
        details: dict[str, Any] = {"url": url}
        if status is not None:
            details["http_status"] = status
        super().__init__(f"scraping {url} failed: {message}", details=details, retryable=True, **kwargs)
        self.url = url
        self.http_status = status


class MetricsFormatError(WorkflowError):
    """Metrics text that cannot be parsed or normalised.

    Args:
        source: where the text came from (a URL or a file name, ``"<text>"`` otherwise).
        message: what is wrong with it.
    """

    name = "MetricsFormatError"
    status = 422

    def __init__(self, source: str, message: str, **kwargs: Any) -> None:
        super().__init__(f"{source}: {message}", details={"source": source}, retryable=False, **kwargs)
        self.source = source
        self.reason = message


class RolloutTargetError(WorkflowError):
    """An instance's admin endpoint refused or failed a rollout command.

    Args:
        instance: id of the instance.
        action: ``apply``, ``weights``, ``restore`` or ``config``.
        message: what went wrong.
        status: the HTTP status when the endpoint answered.
    """

    name = "RolloutTargetError"
    status = 502

    def __init__(
        self, instance: str, action: str, message: str, *, status: int | None = None, **kwargs: Any
    ) -> None:
        details: dict[str, Any] = {"instance": instance, "action": action}
        if status is not None:
            details["http_status"] = status
        retryable = status is None or status >= 500
        super().__init__(
            f"{action} on instance {instance!r} failed: {message}",
            details=details,
            retryable=retryable,
            **kwargs,
        )
        self.instance = instance
        self.action = action
        self.http_status = status


class AnalysisError(WorkflowError):
    """The inputs of an analysis or canary judgment cannot be used as given."""

    name = "AnalysisError"
    status = 422

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, retryable=False, **kwargs)

"""The models commands agree with the server on the words they offer."""

from __future__ import annotations

from openmaas.cli.models import _ISOLATIONS
from openmaas.serving.deployment import ISOLATIONS


def test_deploy_offers_every_isolation() -> None:
    assert _ISOLATIONS == ISOLATIONS

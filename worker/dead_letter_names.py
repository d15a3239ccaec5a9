"""The contract's names for what a dead-letter copy carries besides its body (README,
"Messages"): the worker writes them, `nps-worker dlq` reads them."""

from __future__ import annotations

from typing import Final

from .faststream_sqs import DeadLetterAttributes

DEAD_LETTER_ATTRIBUTES: Final = DeadLetterAttributes(
    reason="nps-reject-reason",
    detail="nps-reject-detail",
    original_id="nps-original-message-id",
    redrive_run="nps-redrive-run",
    truncated="nps-body-truncated",
)

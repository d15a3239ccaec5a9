"""How the settlement parts pace themselves: the options an application may tune."""

from __future__ import annotations

from dataclasses import dataclass, field

from .dead_letters import DeadLetterAttributes
from .limits import DEFAULT_VISIBILITY_TIMEOUT


@dataclass(frozen=True, slots=True)
class SettleOptions:
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT
    # How long a handled message may wait for its checkpoint before one is forced.
    flush_interval: float = 1.0
    # A checkpoint runs at least this often even when nothing waits (keeps metrics fresh).
    idle_checkpoint_interval: float = 60.0
    # Received but not yet deleted or released: beyond this, polling pauses.
    max_held: int = 2_000
    # This many handled messages start a checkpoint at once. A kill after a checkpoint
    # and before SQS applied its deletes duplicates what it carried: at thousands of
    # messages a second, a checkpoint per interval would carry thousands.
    checkpoint_messages: int = 50
    # Names of the attributes a dead-letter copy carries.
    dead_letter_attributes: DeadLetterAttributes = field(default_factory=DeadLetterAttributes)

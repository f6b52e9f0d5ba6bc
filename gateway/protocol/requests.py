"""The request that creates a task (``POST /api/tasks``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, StrictBool, StrictInt


class FileRef(BaseModel):
    """A file handed to the agent: a name and where to fetch it (or inline text)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    file_name: str = Field(alias="fileName", min_length=1, max_length=255)
    url: HttpUrl | None = None
    content: str | None = Field(default=None, max_length=1_000_000)
    description: str | None = Field(default=None, max_length=2_000)


class AgentRequest(BaseModel):
    """``AgentRequest`` of DESIGN §4; unknown fields are refused so typos are not silent.

    Fields take their camelCase name or their Python name (``callbackUrl`` or ``callback_url``):
    both land in one field, so whatever checks the field checks both spellings. ``agentType``
    is a JSON integer, nothing else: lax mode read ``true`` as agent 1 and ``"0"`` or ``0.0``
    as agent 0.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=False)

    query: str = Field(min_length=1, max_length=100_000)
    agent_type: StrictInt = Field(default=3, alias="agentType", ge=0, le=99)
    request_id: str | None = Field(default=None, alias="requestId", min_length=1, max_length=128)
    callback_url: HttpUrl | None = Field(default=None, alias="callbackUrl")
    cancel_on_disconnect: StrictBool = Field(default=False, alias="cancelOnDisconnect")
    files: list[FileRef] = Field(default_factory=list, max_length=50)

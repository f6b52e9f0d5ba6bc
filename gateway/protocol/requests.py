"""The request that creates a task (``POST /api/tasks``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, StrictBool


class FileRef(BaseModel):
    """A file handed to the agent: a name and where to fetch it (or inline text)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    file_name: str = Field(alias="fileName", min_length=1, max_length=255)
    url: HttpUrl | None = None
    content: str | None = Field(default=None, max_length=1_000_000)
    description: str | None = Field(default=None, max_length=2_000)


class AgentRequest(BaseModel):
    """``AgentRequest`` of DESIGN §4; unknown fields are refused so typos are not silent."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=False)

    query: str = Field(min_length=1, max_length=100_000)
    agent_type: int = Field(default=3, alias="agentType", ge=0, le=99)
    request_id: str | None = Field(default=None, alias="requestId", min_length=1, max_length=128)
    callback_url: HttpUrl | None = Field(default=None, alias="callbackUrl")
    cancel_on_disconnect: StrictBool = Field(default=False, alias="cancelOnDisconnect")
    files: list[FileRef] = Field(default_factory=list, max_length=50)

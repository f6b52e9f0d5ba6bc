# One image for every service of the Agent Stream Gateway; compose picks the service with
# `command: ["agent-gateway", "serve", "<service>"]`. The default is the gateway.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0

# bubblewrap: the code interpreter's sandbox (tool_service/_bwrap.py).
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY tool_service ./tool_service
COPY mcp_client ./mcp_client
COPY llm_stub ./llm_stub
COPY frontend_stub ./frontend_stub
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app

# Services run unprivileged; compose runs tool_service as root so that its code sandbox can give
# every run a uid of its own before it enters bubblewrap (see tool_service/sandbox.py).
USER app
EXPOSE 8080 1601 8188 8000 3000
CMD ["agent-gateway", "serve", "gateway"]

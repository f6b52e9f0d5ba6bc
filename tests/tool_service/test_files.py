"""The file tool: uploads, lookups, downloads, previews, and refusal of unsafe names."""

from __future__ import annotations

from tests.tool_service.support import Service

TRAVERSAL_NAMES = [
    "../secret.txt",
    "../../etc/passwd",
    "/etc/passwd",
    "sub/dir.txt",
    "..",
    ".",
    ".hidden",
    "a\\b.txt",
    "nul\x00byte.txt",
    "line\nbreak.txt",
    "",
]


def _upload(service: Service, name: str, content: str = "hello", request_id: str = "req-1"):  # type: ignore[no-untyped-def]
    return service.client.post(
        "/v1/file_tool/upload_file",
        json={"requestId": request_id, "fileName": name, "description": "d", "content": content},
    )


def test_an_uploaded_file_can_be_found_listed_downloaded_and_previewed(service: Service) -> None:
    uploaded = _upload(service, "notes.md", "# Notes\nhello wörld\n")
    assert uploaded.status_code == 200
    info = uploaded.json()
    assert info["fileName"] == "notes.md"
    assert info["fileSize"] == len("# Notes\nhello wörld\n".encode())
    assert info["downloadUrl"] == service.url + "/v1/file_tool/download/req-1/notes.md"
    assert info["domainUrl"] == service.url + "/v1/file_tool/preview/req-1/notes.md"

    found = service.client.post(
        "/v1/file_tool/get_file", json={"requestId": "req-1", "fileName": "notes.md"}
    )
    assert found.json()["description"] == "d"
    listing = service.client.post("/v1/file_tool/get_file_list", json={"requestId": "req-1"})
    assert [item["fileName"] for item in listing.json()["results"]] == ["notes.md"]

    download = service.client.get(info["downloadUrl"])
    assert download.text == "# Notes\nhello wörld\n"
    assert download.headers["content-disposition"].startswith("attachment")
    preview = service.client.get(info["domainUrl"])
    assert preview.headers["content-disposition"].startswith("inline")
    assert preview.headers["content-security-policy"] == "sandbox"
    assert preview.headers["content-type"].startswith("text/")


def test_a_multipart_upload_is_stored(service: Service) -> None:
    response = service.client.post(
        "/v1/file_tool/upload_file_data",
        data={"requestId": "req-2", "description": "raw"},
        files={"file": ("data.bin", b"\x00\x01\x02", "application/octet-stream")},
    )
    assert response.status_code == 200
    assert response.json()["fileSize"] == 3
    assert service.client.get(response.json()["downloadUrl"]).content == b"\x00\x01\x02"


def test_traversal_file_names_are_refused_by_every_tool(service: Service) -> None:
    for name in TRAVERSAL_NAMES:
        response = _upload(service, name)
        assert response.status_code == 400, name
        assert response.json()["error"]["code"] == "invalid_request"
        lookup = service.client.post(
            "/v1/file_tool/get_file", json={"requestId": "req-1", "fileName": name}
        )
        assert lookup.status_code == 400, name
        ci = service.client.post(
            "/v1/tool/code_interpreter",
            json={"requestId": "req-1", "code": "print(1)", "fileNames": [name]},
        )
        assert ci.status_code == 400, name
        report = service.client.post(
            "/v1/tool/report", json={"requestId": "req-1", "task": "t", "fileName": name or "/"}
        )
        assert report.status_code == 400, name
    assert not (service.settings.file_root.parent / "secret.txt").exists()
    assert list(service.settings.file_root.iterdir()) == []


def test_unsafe_request_ids_are_refused(service: Service) -> None:
    for request_id in ["../up", "/abs", "a/b", ".", "", "x" * 200, "a\x00b"]:
        assert _upload(service, "ok.txt", request_id=request_id).status_code == 400, request_id


def test_traversal_in_download_urls_never_escapes_the_file_root(service: Service) -> None:
    _upload(service, "ok.txt")
    for path in (
        "/v1/file_tool/download/req-1/..",
        "/v1/file_tool/download/req-1/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/v1/file_tool/download/..%2f..%2fetc/passwd",
        "/v1/file_tool/preview/req-1/.meta.json",
    ):
        response = service.client.get(path)
        assert response.status_code in (400, 404), path
        assert "root:" not in response.text
    assert service.client.get("/v1/file_tool/download/req-1/missing.txt").status_code == 404


def test_files_over_the_size_limit_are_refused(service: Service) -> None:
    too_big = "x" * (service.settings.max_file_bytes + 1)
    response = _upload(service, "big.txt", too_big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    multipart = service.client.post(
        "/v1/file_tool/upload_file_data",
        data={"requestId": "req-1"},
        files={"file": ("big.bin", too_big.encode(), "application/octet-stream")},
    )
    assert multipart.status_code == 413

"""The local Hub (`tests/hub_server.py`) behaves like huggingface.co for the real huggingface_hub client.

These tests pin the behaviour the push tests rely on: one commit per upload, identical bytes back from a fresh
cache, branches and pull requests that leave main alone, a refused commit that changes nothing, the client's own
exceptions for missing repos/revisions/files, the token sent as a bearer header, and a sentence-transformers
model that loads from the Hub with the same embeddings.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

BINARY = bytes(range(256)) * 40  # not valid UTF-8, larger than the 512-byte preupload sample


def _write_folder(folder, version: str):
    files = {
        "config.json": f'{{"version": "{version}"}}'.encode(),
        "weights.bin": BINARY + version.encode(),
        "sub/notes.txt": f"notes {version}\n".encode(),
    }
    for path, content in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(content)
    return files


def _commit_ids(api: HfApi, repo_id: str, revision: str = "main") -> list[str]:
    return [commit.commit_id for commit in api.list_repo_commits(repo_id, revision=revision)]


def test_upload_folder_is_one_commit_and_downloads_give_the_same_bytes(hub_server, tmp_path):
    api = HfApi()
    repo_url = api.create_repo("user/tiny", private=True)
    assert repo_url.repo_id == "user/tiny"
    assert api.create_repo("user/tiny", exist_ok=True).repo_id == "user/tiny"
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo("user/tiny")
    assert conflict.value.response.status_code == 409

    before = _commit_ids(api, "user/tiny")  # the Hub's "initial commit" with .gitattributes
    files = _write_folder(tmp_path / "v1", "v1")
    info = api.upload_folder(repo_id="user/tiny", folder_path=tmp_path / "v1", commit_message="Add v1 secret-msg")

    commits = api.list_repo_commits("user/tiny")
    assert [commit.commit_id for commit in commits] == [info.oid, *before]
    assert commits[0].title == "Add v1 secret-msg"
    assert re.fullmatch(r"[0-9a-f]{40}", info.oid)
    assert api.model_info("user/tiny").sha == info.oid
    assert api.model_info("user/tiny").private is True
    assert sorted(api.list_repo_files("user/tiny")) == sorted([".gitattributes", *files])
    top_level = {entry.path for entry in api.list_repo_tree("user/tiny")}
    assert top_level == {".gitattributes", "config.json", "weights.bin", "sub"}

    for path, content in files.items():
        downloaded = hf_hub_download("user/tiny", path, cache_dir=tmp_path / f"cache-{path.replace('/', '-')}")
        assert Path(downloaded).read_bytes() == content
    snapshot = snapshot_download("user/tiny", cache_dir=tmp_path / "snapshot-cache")
    assert Path(snapshot).is_relative_to(tmp_path / "snapshot-cache")
    assert {path: (Path(snapshot) / path).read_bytes() for path in files} == files

    # Uploading the same folder again changes nothing: the client skips files whose oid the Hub already has.
    api.upload_folder(repo_id="user/tiny", folder_path=tmp_path / "v1")
    assert _commit_ids(api, "user/tiny") == [info.oid, *before]

    repo_requests = [r for r in hub_server.requests if r.path.startswith(("/api/repos/", "/api/models/", "/user/"))]
    assert {r.authorization for r in repo_requests} == {f"Bearer {hub_server.token}"}
    assert BINARY + b"v1" in hub_server.uploaded_blobs
    assert b"secret-msg" in hub_server.received_bytes() and b"notes v1" in hub_server.received_bytes()
    assert hub_server.files("user/tiny")["weights.bin"] == files["weights.bin"]


def test_branches_and_pull_requests_leave_main_unchanged(hub_server, tmp_path):
    api = HfApi()
    api.create_repo("user/tiny")
    v1 = _write_folder(tmp_path / "v1", "v1")
    first = api.upload_folder(repo_id="user/tiny", folder_path=tmp_path / "v1").oid

    api.create_branch("user/tiny", branch="dev")
    v2 = _write_folder(tmp_path / "v2", "v2")
    on_dev = api.upload_folder(repo_id="user/tiny", folder_path=tmp_path / "v2", revision="dev")
    assert {ref.name: ref.target_commit for ref in api.list_repo_refs("user/tiny").branches} == {
        "main": first,
        "dev": on_dev.oid,
    }
    assert _commit_ids(api, "user/tiny", revision="dev") == [on_dev.oid, *_commit_ids(api, "user/tiny")]

    # upload_folder(create_pr=True) opens a draft PR, then commits to its ref; create_commit uses ?create_pr=1.
    pr = api.upload_folder(repo_id="user/tiny", folder_path=tmp_path / "v2", create_pr=True)
    assert pr.pr_url == f"{hub_server.url}/user/tiny/discussions/1" and pr.pr_revision == "refs/pr/1"
    second_pr = api.create_commit(
        "user/tiny",
        [CommitOperationAdd("extra.txt", b"extra")],
        commit_message="Add extra",
        create_pr=True,
    )
    assert second_pr.pr_revision == "refs/pr/2"
    assert "extra.txt" in api.list_repo_files("user/tiny", revision="refs/pr/2")

    def read(path, revision):
        return Path(hf_hub_download("user/tiny", path, revision=revision, cache_dir=tmp_path / "cache")).read_bytes()

    assert _commit_ids(api, "user/tiny")[0] == first
    assert read("config.json", "main") == v1["config.json"]
    assert read("config.json", "dev") == v2["config.json"]
    assert read("config.json", "refs/pr/1") == v2["config.json"]
    assert read("config.json", first) == v1["config.json"]  # earlier states stay addressable by sha
    assert "extra.txt" not in api.list_repo_files("user/tiny")


def test_a_refused_commit_changes_nothing(hub_server, tmp_path):
    api = HfApi()
    api.create_repo("user/tiny")
    _write_folder(tmp_path / "v1", "v1")
    api.upload_folder(repo_id="user/tiny", folder_path=tmp_path / "v1")
    files, commits = hub_server.files("user/tiny"), _commit_ids(api, "user/tiny")

    hub_server.fail_next_commit = True
    with pytest.raises(HfHubHTTPError) as failure:
        api.create_commit("user/tiny", [CommitOperationAdd("new.txt", b"attempted")], commit_message="Try")
    assert failure.value.response.status_code == 500
    assert b"attempted" in hub_server.uploaded_blobs  # what was sent is recorded even though it was refused
    assert hub_server.fail_next_commit is False

    # upload_folder retries 5xx on commit, so fail it with a status it does not retry.
    _write_folder(tmp_path / "v2", "v2")
    hub_server.fail_next_commit, hub_server.commit_failure_status = True, 422
    with pytest.raises(HfHubHTTPError) as failure:
        api.upload_folder(repo_id="user/tiny", folder_path=tmp_path / "v2")
    assert failure.value.response.status_code == 422
    assert hub_server.files("user/tiny") == files
    assert _commit_ids(api, "user/tiny") == commits
    assert sorted(api.list_repo_files("user/tiny")) == sorted(files)

    # A single 500 is retried by upload_folder (after a 1 s backoff) and still lands exactly one commit.
    hub_server.fail_next_commit, hub_server.commit_failure_status = True, 500
    retried = api.upload_folder(repo_id="user/tiny", folder_path=tmp_path / "v2")
    assert _commit_ids(api, "user/tiny") == [retried.oid, *commits]


def test_the_client_raises_its_own_exceptions(hub_server, tmp_path, monkeypatch):
    api = HfApi()
    api.create_repo("user/tiny", private=True)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("user/missing")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("user/missing", "config.json", cache_dir=tmp_path / "cache")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("user/tiny", ".gitattributes", revision="nope", cache_dir=tmp_path / "cache")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("user/tiny", "modules.json", cache_dir=tmp_path / "cache")
    assert api.file_exists("user/tiny", ".gitattributes") and not api.file_exists("user/tiny", "modules.json")
    assert api.whoami()["name"] == "user"

    monkeypatch.delenv("HF_TOKEN")
    anonymous = HfApi()
    with pytest.raises(HfHubHTTPError) as no_token:
        anonymous.create_repo("user/other")
    assert no_token.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as no_token:
        anonymous.create_commit("user/tiny", [CommitOperationAdd("a.txt", b"a")], commit_message="Anonymous")
    assert no_token.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError):  # a private repo is invisible without the token
        anonymous.model_info("user/tiny")
    with pytest.raises(HfHubHTTPError) as wrong_token:
        HfApi(token="hf_wrong").create_repo("user/other")
    assert wrong_token.value.response.status_code == 401
    assert "user/other" not in hub_server.repos
    assert hub_server.authorizations[-1] == "Bearer hf_wrong"


def test_a_sentence_transformer_loads_from_the_hub_with_the_same_embeddings(hub_server, tiny_bert_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    local = SentenceTransformer(str(tiny_bert_path))
    local.save(str(tmp_path / "st-tiny"))
    api = HfApi()
    api.create_repo("user/st-tiny", private=True)
    api.upload_folder(repo_id="user/st-tiny", folder_path=tmp_path / "st-tiny")

    loaded = SentenceTransformer("user/st-tiny")
    texts = ["How do I sort a list of numbers?", "def reverse(s):\n    return s[::-1]"]
    torch.testing.assert_close(
        loaded.encode(texts, convert_to_tensor=True), local.encode(texts, convert_to_tensor=True)
    )
    assert (tmp_path / "hf_home" / "hub" / "models--user--st-tiny").is_dir()  # the fixture's fresh cache
    assert hub_server.unhandled == []  # every endpoint the loading needed is implemented
    assert any(r.method == "HEAD" and r.path.endswith("/adapter_config.json") for r in hub_server.requests)

"""The strict unified-diff applier and validator, and the GitLab adapter (respx, strict)."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
import respx

from mirror.fixes.diff import apply, make_diff, parse, validate
from mirror.fixes.errors import PatchRejected, RepoError, TransientError
from mirror.fixes.repos import ChangeRequest, GitLabRepo

pytestmark = pytest.mark.unit

HEADER = "--- a/prompts/system.md\n+++ b/prompts/system.md\n"
FILES = {
    "prompts/system.md": "line 1\nline 2\nline 3\n",
    "config/tools.json": '{"tools": []}\n',
    "agent/rules.py": "RULES = []\n",
}


@pytest.mark.parametrize(
    ("old", "new"),
    [("a\nb\nc\n", "a\nB\nc\nd\n"), ("a\nb", "a\nB"), ("", "x\n"), ("x\n", ""), ("a\nb\n", "a\nb")],
)
def test_make_diff_and_apply_round_trip(old: str, new: str) -> None:
    (patch,) = parse(make_diff("f.md", old, new))
    assert apply(old, patch) == new


def test_a_valid_patch_is_applied_and_its_files_parsed() -> None:
    diff = make_diff("config/tools.json", FILES["config/tools.json"], '{"tools": ["a"]}\n')
    v = validate(diff, ["prompts/system.md", "config/tools.json"], FILES.__getitem__)
    assert v.files == {"config/tools.json": '{"tools": ["a"]}\n'}
    assert "config/tools.json: parses as JSON" in v.checks


@pytest.mark.parametrize(
    ("diff", "message"),
    [
        (
            make_diff("agent/rules.py", FILES["agent/rules.py"], "RULES = [1]\n"),
            "outside the fixable",
        ),
        (make_diff("../etc/passwd", "a\n", "b\n"), "leaves the repository"),
        (
            HEADER + "@@ -1,2 +1,2 @@\n-line 9\n+x\n line 2\n",
            "does not apply",
        ),
        (
            "--- a/prompts/system.md\n+++ b/prompts/system.md\n@@ -1,3 +1,3 @@\n-line 1\n+x\n",
            r"says -3 \+3 lines but has -1 \+1",
        ),
        ("--- /dev/null\n+++ b/prompts/new.md\n@@ -0,0 +1 @@\n+x\n", "only modify existing"),
        ("diff --git a/p b/p\ndeleted file mode 100644\n", "only modify existing"),
        ("just some prose, no diff", "no file changes"),
        (
            make_diff("config/tools.json", FILES["config/tools.json"], '{"tools": [\n'),
            "does not parse",
        ),
        (make_diff("agent/rules.py", FILES["agent/rules.py"], "RULES = [\n"), "does not parse"),
    ],
    ids=["other-file", "escape", "context", "counts", "create", "delete", "prose", "json", "py"],
)
def test_bad_patches_are_rejected_with_the_reason(diff: str, message: str) -> None:
    fixable = ["prompts/system.md", "config/tools.json", "agent/rules.py"]
    if "outside" in message:
        fixable = ["prompts/system.md"]
    with pytest.raises(PatchRejected, match=message):
        validate(diff, fixable, FILES.__getitem__)


# --- GitLab ------------------------------------------------------------------------------------

GL = "https://gitlab.example/api/v4/projects/acme%2Fagent"


def _gitlab() -> GitLabRepo:
    return GitLabRepo("acme/agent", lambda: "glpat-test", api_url="https://gitlab.example/api/v4")


def test_gitlab_reads_commits_and_opens_a_merge_request() -> None:
    change = ChangeRequest("main", "b" * 40, "mirror/fix-1", {"prompts/system.md": "new\n"},
                           "msg", "title", "body")  # fmt: skip
    with respx.mock(assert_all_mocked=True) as router:
        router.get(f"{GL}/repository/branches/main").respond(200, json={"commit": {"id": "b" * 40}})
        router.get(f"{GL}/repository/files/prompts%2Fsystem.md").respond(
            200, json={"encoding": "base64", "content": base64.b64encode(b"old\n").decode()}
        )
        commit = router.post(f"{GL}/repository/commits").respond(201, json={"id": "c" * 40})
        mr = router.post(f"{GL}/merge_requests").respond(
            201, json={"web_url": "https://gitlab.example/acme/agent/-/merge_requests/3", "iid": 3}
        )
        repo = _gitlab()
        assert repo.head("main") == "b" * 40
        assert repo.read_file("prompts/system.md", "b" * 40) == "old\n"
        opened = repo.open_change(change)
    sent = json.loads(commit.calls.last.request.content)
    assert sent["start_sha"] == "b" * 40 and sent["branch"] == "mirror/fix-1"
    assert sent["actions"] == [{"action": "update", "file_path": "prompts/system.md",
                                "content": "new\n"}]  # fmt: skip
    assert json.loads(mr.calls.last.request.content)["target_branch"] == "main"
    assert commit.calls.last.request.headers["authorization"] == "Bearer glpat-test"
    assert (opened.url, opened.number, opened.commit) == (
        "https://gitlab.example/acme/agent/-/merge_requests/3", 3, "c" * 40)  # fmt: skip


@pytest.mark.parametrize(("status", "error"), [(502, TransientError), (429, TransientError),
                                               (403, RepoError), (404, RepoError)])  # fmt: skip
def test_gitlab_errors_are_classified(status: int, error: type[Exception]) -> None:
    with respx.mock(assert_all_mocked=True) as router:
        router.get(f"{GL}/repository/branches/main").respond(status, json={"message": "nope"})
        with pytest.raises(error, match=f"HTTP {status}") as raised:
            _gitlab().head("main")
    assert "glpat" not in str(raised.value)


def test_a_timeout_is_transient() -> None:
    with respx.mock(assert_all_mocked=True) as router:
        router.get(f"{GL}/repository/branches/main").mock(side_effect=httpx.ReadTimeout("slow"))
        with pytest.raises(TransientError, match="timed out"):
            _gitlab().head("main")

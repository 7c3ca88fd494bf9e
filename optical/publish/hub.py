"""`optical push RUN_DIR REPO_ID`: a finished run's student, with its model card, to the Hugging Face hub.

Everything local is checked first (the run directory through load_run, the repository id,
the card refreshed from the run), then one commit uploads every file of ``student/``; the
card's usage snippets name the repository. Any hub or network failure (offline mode, no
network, no or a read-only token, a name taken) is one line.
"""

from __future__ import annotations

from pathlib import Path

from optical.errors import OpticalError


def check_repo_id(repo_id: str) -> str:
    """`owner/name` (or `name`, in the token's own namespace) as the hub accepts it."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise OpticalError(f"{repo_id!r}: not a hub repository id ({str(err).splitlines()[0]})") from None
    return repo_id


def hub_error(err: Exception, repo_id: str) -> str:
    """One line for whatever the hub client raised."""
    name = type(err).__name__
    text = " ".join(str(err).split()) or name
    status = getattr(getattr(err, "response", None), "status_code", None)
    if name == "OfflineModeIsEnabled":
        return f"push to {repo_id}: HF_HUB_OFFLINE is set (offline mode); unset it on a machine with a network"
    if status in (401, 403):
        return (f"push to {repo_id}: not allowed ({status}): give --token or set HF_TOKEN to a token with write "
                f"access (or log in with `hf auth login`)")
    if "Connect" in name or "Timeout" in name or "Network" in name:
        return f"push to {repo_id}: cannot reach the Hugging Face hub ({name}: {text[:200]})"
    return f"push to {repo_id} failed: {name}: {text[:300]}"


def upload_files(student_dir: Path) -> list[Path]:
    """Every file the student folder holds, README.md included; no temporary leftovers."""
    return sorted(p for p in student_dir.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(student_dir).parts))


def push(run_dir: str | Path, repo_id: str, token: str | None = None, private: bool = False,
         revision: str | None = None, message: str | None = None) -> str:
    """Upload the run's student folder and card to `repo_id`; returns the commit's URL.

    `private` applies when the repository is created; `revision` is a branch (created from
    the default branch when missing)."""
    from optical.publish.card import card_for_hub, refresh_card
    from optical.run_dir import load_run

    run_dir = Path(run_dir)
    recipe, student_dir = load_run(run_dir)
    check_repo_id(repo_id)
    if revision is not None and not revision.strip():
        raise OpticalError("--revision: empty branch name")
    card = refresh_card(run_dir)  # the evaluations in the run right now
    from huggingface_hub import CommitOperationAdd, HfApi

    operations = []
    for path in upload_files(student_dir):
        name = path.relative_to(student_dir).as_posix()
        if path == card:
            content = card_for_hub(card.read_text(encoding="utf-8"), repo_id).encode("utf-8")
            operations.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=content))
        else:
            operations.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)))
    message = message or f"optical: {recipe.name} ({recipe.student.model} distilled from {recipe.teacher.model_spec})"
    api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        target = getattr(repo, "repo_id", None) or repo_id
        if revision is not None:
            api.create_branch(target, branch=revision, exist_ok=True, repo_type="model")
        commit = api.create_commit(target, operations, commit_message=message, revision=revision,
                                   repo_type="model")
    except Exception as err:  # the network and the hub: whatever fails there is one line
        raise OpticalError(hub_error(err, repo_id)) from None
    return str(getattr(commit, "commit_url", None) or commit)

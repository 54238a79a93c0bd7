"""Publish an exported model folder to the Hugging Face hub, with its model card.

A thin wrapper over `huggingface_hub.create_repo` + `huggingface_hub.upload_folder`. The token
is never handled here: `token=None` lets huggingface_hub find it where it always does (the
HF_TOKEN environment variable, or the cache written by `hf auth login`), and nothing this
module writes or prints contains it. Repositories are private unless asked otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..errors import InputError, scrub_tokens
from ..io import write_text
from ..models.weights import is_repo_id
from .card_info import CardInfo
from .export import CARD, EXPORT_FILES
from .model_card import GENERATED_MARK, PLACEHOLDER_REPO, write_model_card

REQUIRED_FILES = ("config.json", "model.safetensors")


def check_export_folder(folder: str | Path) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such export folder")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise InputError(f"{folder}: not a Hugging Face export (missing {', '.join(missing)}); "
                         "make one with `python convert.py --from MODEL --to FOLDER --format hf` or mlx_clip.export_hf")
    return folder


def check_repo_id(repo_id: str) -> str:
    if not is_repo_id(repo_id, local_path_wins=False):
        raise InputError(f"{repo_id!r}: not a hub repo id; use OWNER/NAME (your user or organisation name, "
                         "then the model's name), e.g. alice/coins-clip")
    return repo_id


def check_login(token: str | None = None) -> None:
    """InputError unless a token is given or huggingface_hub finds one (HF_TOKEN, `hf auth login`)."""
    import huggingface_hub

    if token is None and not huggingface_hub.get_token():
        raise InputError("not logged in to the Hugging Face hub: run `hf auth login` or set HF_TOKEN "
                         "to a token with write access (https://huggingface.co/settings/tokens)")


def files_to_upload(folder: str | Path) -> list[str]:
    """The files `push_to_hub` uploads from `folder`: the ones an export writes (export.EXPORT_FILES)
    and the model card, nothing else (not a `.env`, notes or anything else that lies there), sorted.
    A link among them is refused: it could point anywhere on this machine."""
    folder = Path(folder)
    names = sorted(name for name in EXPORT_FILES | {CARD} if (folder / name).is_file() or (folder / name).is_symlink())
    for name in names:
        if (folder / name).is_symlink():
            raise InputError(f"{folder / name}: is a link; an upload takes only files the export wrote there")
    return names


def _prepare_card(folder: Path, repo_id: str, card: Any) -> None:
    """Write README.md: a new card from `card`, or fill the repo id into a card written earlier."""
    readme = folder / "README.md"
    if card is False:
        return
    if card is None and readme.is_file():
        text = readme.read_text(encoding="utf-8")
        if GENERATED_MARK in text:  # written by write_model_card (e.g. by finetune): keep its content
            write_text(readme, text.replace(PLACEHOLDER_REPO, repo_id))
        return  # a card of the user's own: leave it alone
    info = CardInfo.from_dict(card)
    if info.repo_id is None:
        info.repo_id = repo_id
    write_model_card(folder, info)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def push_to_hub(folder: str | Path, repo_id: str, private: bool = True, token: str | None = None,
                card: CardInfo | Mapping[str, Any] | None | bool = None,
                commit_message: str | None = None) -> str:
    """Upload an HF export folder (with its model card) to `repo_id`; returns the model's URL.

    card: a `CardInfo` or dict (written as README.md, repo id filled in); None keeps a card
    already in the folder (filling in its repo id) or writes a minimal one; False uploads the
    folder as it is. private: new repositories are private unless False (an existing
    repository keeps its visibility). token: None (default) uses HF_TOKEN or `hf auth login`.
    """
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    folder = check_export_folder(folder)
    repo_id = check_repo_id(repo_id)
    check_login(token)
    _prepare_card(folder, repo_id, card)
    files = files_to_upload(folder)
    try:
        url = huggingface_hub.create_repo(repo_id, private=private, exist_ok=True, token=token,
                                          repo_type="model")
        huggingface_hub.upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type="model", token=token,
            commit_message=commit_message or "Upload CLIP model fine-tuned with mlx-clip-finetune",
            allow_patterns=files,  # the export's files and its card only
        )
    except OfflineModeIsEnabled:
        raise InputError("HF_HUB_OFFLINE is set: unset it to upload to the Hugging Face hub") from None
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 401:
            message = ("the Hugging Face hub rejected the token (401 Unauthorized): log in again with "
                       "`hf auth login` or set HF_TOKEN to a valid token with write access")
        elif status == 403:
            message = (f"{repo_id}: no write access (403 Forbidden): the token needs the write role, "
                       "and OWNER must be you or an organisation you can write to")
        else:
            message = f"{repo_id}: upload to the Hugging Face hub failed (HTTP {status}: {_one_line(err)})"
        raise InputError(scrub_tokens(message, [token])) from None
    except Exception as err:  # network errors: httpx's TransportError family, OSError, timeouts
        if not _is_network_error(err):
            raise
        raise InputError(scrub_tokens(f"{repo_id}: could not reach the Hugging Face hub "
                                f"({type(err).__name__}: {_one_line(err)})", [token])) from None
    return str(url) if str(url).startswith("http") else f"https://huggingface.co/{repo_id}"


def _is_network_error(err: BaseException) -> bool:
    if isinstance(err, (OSError, TimeoutError, ConnectionError)):
        return True
    module = type(err).__module__ or ""
    return module.split(".")[0] in ("httpx", "httpx2", "httpcore", "requests", "urllib3")

"""Hub ids for ``from_pretrained``: a folder on disk, or a model repo on the Hugging Face Hub.

:func:`resolve_folder` turns what a user passes to ``from_pretrained`` into a local folder.
A folder is returned as it is; a repo id (``"org/name"``) is fetched through the optional
``huggingface_hub`` package (``pip install 'roformer-tri[hub]'``) into its cache, with its
cache layout, offline mode (``HF_HUB_OFFLINE=1``), ``HF_ENDPOINT`` and progress bars. Only the
files asked for are downloaded, and of the weights only the first format the repo has. Every
failure (no such repo, file or revision, no network, a gated repo without a token, a download
cut short) is one :class:`~roformer_core.errors.CheckpointError` line; huggingface_hub writes
each file under a temporary name and renames it when complete, so a broken download never
leaves a file that loads.

Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> resolve_folder(folder) == folder              # a folder on disk: as it is, nothing imported
    True
    >>> is_local(folder), is_local("junnyu/roformer_chinese_base"), is_local("./not/there")
    (True, False, True)
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from typing import Any, Mapping

from roformer_core.errors import CheckpointError

#: The keyword arguments of ``from_pretrained`` that choose where a hub id is fetched from.
HUB_OPTIONS = ("revision", "cache_dir", "local_files_only", "token", "force_download")

#: The line telling what to install when a hub id is given without huggingface_hub.
INSTALL_HINT = "pip install 'roformer-tri[hub]'"

#: Weight files of a checkpoint, in the order they are preferred (before a backend's native file).
DEFAULT_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")

# The Hub's own rule for repo ids (huggingface_hub.utils.validate_repo_id): an optional
# namespace, a name, word characters, "-" and "." but not at either end.
_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"(?:{_NAME}/)?{_NAME}", re.ASCII)
_COMMIT = re.compile(r"[0-9a-f]{40}")
_TRUE = {"1", "ON", "YES", "TRUE"}


def is_local(path_or_id: Any) -> bool:
    """Whether ``path_or_id`` names something on disk rather than a Hub repo.

    True for an existing path, a ``pathlib.Path`` (a path by intent), and any string that cannot
    be a repo id (``./x``, ``/abs/x``, ``a/b/c``, ``C:\\x``, ``x..y``); false for a string that is
    a valid repo id and is not on disk.

    Example:
        >>> is_local("/definitely/not/here"), is_local("bert-base-chinese"), is_local("org/name")
        (True, False, False)
        >>> import pathlib; is_local(pathlib.Path("org/name"))
        True
    """
    if isinstance(path_or_id, os.PathLike) or not isinstance(path_or_id, str):
        return True
    if os.path.exists(path_or_id):
        return True
    return not _could_be_repo_id(path_or_id)


def _could_be_repo_id(text: str) -> bool:
    return (len(text) <= 96 and _REPO_ID.fullmatch(text) is not None and "--" not in text
            and ".." not in text and not text.endswith(".git"))


def split_hub_options(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``from_pretrained`` keyword arguments into hub options and the rest.

    Example:
        >>> split_hub_options({"revision": "v1", "dtype": "float32"})
        ({'revision': 'v1'}, {'dtype': 'float32'})
    """
    hub = {k: v for k, v in kwargs.items() if k in HUB_OPTIONS}
    rest = {k: v for k, v in kwargs.items() if k not in HUB_OPTIONS}
    return hub, rest


def resolve_folder(path_or_id: str | os.PathLike, *, files: tuple[str, ...] = ("config.json",),
                   weights: tuple[str, ...] = (), revision: str | None = None,
                   cache_dir: str | os.PathLike | None = None, local_files_only: bool = False,
                   token: str | bool | None = None, force_download: bool = False) -> str:
    """A local folder for ``path_or_id``: a folder on disk as it is, or a Hub repo's snapshot.

    For a hub id, the first name in ``files`` must be in the repo, the others are fetched when
    the repo has them; then the first of ``weights`` (preference order) the repo has, with
    every shard its index names when that is a ``*.index.json``. All of them land in the one
    snapshot folder of the revision in the huggingface_hub cache, which is returned. With
    ``local_files_only=True`` or ``HF_HUB_OFFLINE=1`` nothing is asked of the network and the
    cache must hold them; when the Hub cannot be reached the cache is used as well.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> resolve_folder(d, weights=DEFAULT_WEIGHTS, revision="ignored-for-folders") == d
        True
    """
    if not isinstance(path_or_id, (str, os.PathLike)):
        raise CheckpointError(f"expected a folder or a Hub repo id, got {type(path_or_id).__name__}")
    if is_local(path_or_id):
        return os.fspath(path_or_id)
    files = (files,) if isinstance(files, str) else tuple(files)
    weights = (weights,) if isinstance(weights, str) else tuple(weights)
    if not files and not weights:
        raise CheckpointError("resolve_folder needs at least one file or weight name to fetch")
    return _Fetch(path_or_id, files, weights, revision, cache_dir, local_files_only, token,
                  force_download).run()


# -- the fetch ------------------------------------------------------------------------------
class _Unreachable(Exception):
    """The Hub could not be asked (no network, server down, offline): the cache may still do."""


def _import_hub(repo_id: str):
    try:
        import huggingface_hub
    except ImportError:
        raise CheckpointError(f"{repo_id!r} is not a local folder; to load it from the Hugging Face Hub, "
                              f"install huggingface_hub: {INSTALL_HINT}") from None
    return huggingface_hub


def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).split("\n\n")[0].split()) if str(error).strip() else type(error).__name__
    return text[:300]


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection and protocol errors of whichever HTTP client huggingface_hub uses."""
    found: list[type[BaseException]] = []
    for module, names in (("httpx2", ("TransportError", "TimeoutException")),
                          ("httpx", ("TransportError", "TimeoutException")),
                          ("requests", ("ConnectionError", "Timeout"))):
        mod = sys.modules.get(module)
        for name in names:
            cls = getattr(mod, name, None) if mod is not None else None
            if isinstance(cls, type) and issubclass(cls, BaseException):
                found.append(cls)
    return tuple(found) + (ConnectionError, TimeoutError)


class _Fetch:
    def __init__(self, repo_id, files, weights, revision, cache_dir, local_files_only, token, force_download):
        self.repo_id = repo_id
        self.files = files
        self.weights = weights
        self.revision = revision
        # huggingface_hub expands "~" when downloading but not when looking in the cache: do it once here
        self.cache_dir = os.path.expanduser(os.fspath(cache_dir)) if cache_dir is not None else None
        self.token = token
        self.force_download = force_download
        self.hf = _import_hub(repo_id)
        self.constants = importlib.import_module("huggingface_hub.constants")
        self.errors = self._error_classes()
        env_offline = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "")
        self.offline_env = env_offline.strip().upper() in _TRUE or bool(self.constants.is_offline_mode())
        self.local_files_only = bool(local_files_only)
        # HF_ENDPOINT is read now, not when huggingface_hub was imported, so setting it later works.
        self.endpoint = (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None
        self.where = repr(repo_id) + (f" at revision {revision!r}" if revision is not None else "")

    def _error_classes(self) -> dict[str, type[BaseException]]:
        modules = []
        for name in ("huggingface_hub.errors", "huggingface_hub.utils"):
            try:
                modules.append(importlib.import_module(name))
            except ImportError:
                pass

        class _Never(Exception):
            pass

        out = {}
        for name in ("GatedRepoError", "RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError",
                     "LocalEntryNotFoundError", "OfflineModeIsEnabled", "HfHubHTTPError", "HFValidationError"):
            out[name] = next((getattr(m, name) for m in modules if hasattr(m, name)), _Never)
        return out

    @property
    def cache_shown(self) -> str:
        return os.fspath(self.cache_dir) if self.cache_dir is not None else self.constants.HF_HUB_CACHE

    @property
    def endpoint_shown(self) -> str:
        return self.endpoint or self.constants.ENDPOINT

    def run(self) -> str:
        offline = self.local_files_only or self.offline_env
        if offline:
            if self.force_download:
                why = "local_files_only=True" if self.local_files_only else "offline mode (HF_HUB_OFFLINE=1)"
                raise CheckpointError(f"cannot force a download of {self.where} with {why}")
            return self._from_cache(self._offline_reason())
        try:
            return self._download()
        except _Unreachable as e:
            if self.force_download:
                raise CheckpointError(f"cannot download {self.where}: {e}") from None
            try:
                return self._from_cache(str(e))
            except CheckpointError:
                raise CheckpointError(f"cannot download {self.where}: {e}; and the cache ({self.cache_shown}) "
                                      "does not hold it") from None

    def _offline_reason(self) -> str:
        return "local_files_only=True" if self.local_files_only else "offline mode is on (HF_HUB_OFFLINE=1)"

    # -- online ---------------------------------------------------------------------------
    def _download(self) -> str:
        commit, listing = self._listing(self.revision)
        names, weight = self._plan(listing)
        # The first file goes by the revision asked for, so huggingface_hub records the branch or
        # tag in refs/ (offline use finds it there); the rest by the commit that file came from,
        # so a push in between cannot mix two revisions in one folder.
        first = names[0]
        folder = _snapshot_of(self._get(first, self.revision), first)
        got = os.path.basename(folder)
        if got != commit and _COMMIT.fullmatch(got):
            commit, listing = self._listing(got)  # the branch moved since the listing: follow it
            names, weight = self._plan(listing)
        for name in names:
            if name != first:
                self._get(name, commit)
        if weight is not None and weight.endswith(".index.json"):
            index_path = os.path.join(folder, *weight.split("/"))
            for shard in self._shards(index_path, weight):
                if shard not in listing:
                    raise CheckpointError(f"{weight} of {self.where} names the shard {shard}, "
                                          "which the repo does not have")
                self._get(shard, commit)
        return folder

    def _listing(self, revision: str | None) -> tuple[str, set[str]]:
        """The commit ``revision`` points to and the file names of the repo there."""
        api = self.hf.HfApi(endpoint=self.endpoint, library_name="roformer-tri")
        try:
            info = api.model_info(self.repo_id, revision=revision, token=self.token)
        except BaseException as e:
            self._raise(e, None)
        return info.sha, {s.rfilename for s in (info.siblings or [])}

    def _plan(self, listing: set[str]) -> tuple[list[str], str | None]:
        names = []
        if self.files:
            required, optional = self.files[0], self.files[1:]
            if required not in listing:
                raise CheckpointError(f"the Hub repo {self.where} has no {required}")
            names = [required] + [f for f in optional if f in listing]
        weight = None
        if self.weights:
            weight = next((w for w in self.weights if w in listing), None)
            if weight is None:
                raise CheckpointError(f"the Hub repo {self.where} has no weights: none of "
                                      f"{', '.join(self.weights)}")
            names.append(weight)
        return names, weight

    def _get(self, filename: str, revision: str | None) -> str:
        try:
            return self.hf.hf_hub_download(
                self.repo_id, filename, revision=revision, cache_dir=self.cache_dir, token=self.token,
                force_download=self.force_download, endpoint=self.endpoint, library_name="roformer-tri")
        except BaseException as e:
            self._raise(e, filename)

    def _shards(self, index_path: str, index_name: str) -> list[str]:
        try:
            with open(index_path, encoding="utf-8") as fh:
                weight_map = json.load(fh)["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index_name} of {self.where} is not a valid safetensors index: "
                                  f"{_first_line(e)}") from None
        prefix = os.path.dirname(index_name)
        out = []
        for shard in shards:
            if (not isinstance(shard, str) or not shard or ".." in shard or shard.startswith(("/", "\\"))
                    or "\\" in shard or os.path.isabs(shard) or re.match(r"[A-Za-z]:", shard)):
                raise CheckpointError(f"{index_name} of {self.where} names the shard {shard!r}, which is not a "
                                      "file name inside the repo; refusing it")
            out.append(f"{prefix}/{shard}" if prefix else shard)
        return out

    # -- offline --------------------------------------------------------------------------
    def _cached(self, filename: str) -> str | None:
        path = self.hf.try_to_load_from_cache(self.repo_id, filename, cache_dir=self.cache_dir,
                                              revision=self.revision)
        return path if isinstance(path, str) and os.path.isfile(path) else None

    def _from_cache(self, reason: str) -> str:
        found: list[tuple[str, str]] = []
        missing_note = f"is not in the cache ({self.cache_shown}) and {reason}"
        if self.files:
            required = self._cached(self.files[0])
            if required is None:
                raise CheckpointError(f"{self.files[0]} of {self.where} {missing_note}")
            found.append((self.files[0], required))
        if self.weights:
            for weight in self.weights:
                path = self._cached(weight)
                if path is None:
                    continue
                if weight.endswith(".index.json"):
                    shards = self._shards(path, weight)
                    if not all(self._cached(s) for s in shards):
                        continue  # an index whose shards never all arrived is not a checkpoint
                found.append((weight, path))
                break
            else:
                raise CheckpointError(f"no weights of {self.where} ({', '.join(self.weights)}) {missing_note}")
        folders = {_snapshot_of(path, name) for name, path in found}
        if len(folders) != 1:
            raise CheckpointError(f"the cached files of {self.where} are spread over several snapshots; "
                                  "download it again with force_download=True")
        return folders.pop()

    # -- errors ---------------------------------------------------------------------------
    def _raise(self, error: BaseException, filename: str | None):
        """Raise ``error`` as one CheckpointError line (or _Unreachable when the cache may help)."""
        if isinstance(error, (KeyboardInterrupt, SystemExit, CheckpointError)):
            raise error
        E = self.errors
        what = f"{filename} of {self.where}" if filename else self.where
        cause = error.__cause__ or error.__context__
        if isinstance(error, E["GatedRepoError"]):
            hint = ("your token has no access to it: accept its conditions on the Hub page with that account"
                    if self.token else "accept its conditions on the Hub page and pass token= (or log in with "
                    "`hf auth login`)")
            msg = f"the Hub repo {self.where} is gated: {hint}"
        elif isinstance(error, E["RepositoryNotFoundError"]):
            msg = (f"{self.repo_id!r} is not a local folder, and the Hub ({self.endpoint_shown}) has no repo of "
                   "that name (if it is private, pass token= or log in with `hf auth login`)")
        elif isinstance(error, E["RevisionNotFoundError"]):
            msg = f"the Hub repo {self.repo_id!r} has no revision {self.revision or 'main'!r}"
        elif isinstance(error, E["LocalEntryNotFoundError"]):
            reason = (_first_line(cause) if cause is not None and not isinstance(cause, E["OfflineModeIsEnabled"])
                      else "offline mode is on")
            msg = f"cannot download {what}: the Hub cannot be reached ({reason}) and it is not in the cache"
        elif isinstance(error, E["EntryNotFoundError"]):
            msg = f"the Hub repo {self.where} has no {filename}" if filename else f"not found on the Hub: {what}"
        elif isinstance(error, E["OfflineModeIsEnabled"]):
            if filename is None:
                raise _Unreachable("offline mode is on (HF_HUB_OFFLINE=1)") from None
            msg = f"cannot download {what}: offline mode is on (HF_HUB_OFFLINE=1) and it is not in the cache"
        elif isinstance(error, E["HFValidationError"]):
            msg = f"{self.repo_id!r} is not a local folder nor a valid Hub repo id: {_first_line(error)}"
        elif isinstance(error, E["HfHubHTTPError"]):
            response = getattr(error, "response", None)
            status = getattr(response, "status_code", None)
            if filename is None and (status is None or status >= 500):
                raise _Unreachable(f"the Hub ({self.endpoint_shown}) answered {status}") from None
            if status == 401:
                msg = f"the Hub refused {what} (401 unauthorized): pass a valid token= or log in with `hf auth login`"
            elif status == 403:
                said = getattr(error, "server_message", None)
                said = f" ({_first_line(Exception(said))})" if said else ""
                msg = f"the Hub refused {what} (403 forbidden{said}): your token lacks the permission to read it"
            else:
                msg = f"the Hub answered {status} for {what}: {_first_line(error)}"
        elif isinstance(error, _transport_errors()):
            reason = f"the Hub ({self.endpoint_shown}) cannot be reached: {_first_line(error)}"
            if filename is None:
                raise _Unreachable(reason) from None
            msg = (f"the download of {what} broke off ({_first_line(error)}); nothing of it was kept, "
                   "try again")
        elif isinstance(error, ValueError) and cause is not None:
            # huggingface_hub wraps a failed forced download in ValueError("... due to the above error")
            return self._raise(cause, filename)
        elif isinstance(error, OSError):
            sizes = re.search(r"should be of size (\d+) but has size (\d+)", str(error))
            if sizes:
                msg = (f"the download of {what} was incomplete ({sizes[2]} of {sizes[1]} bytes arrived); "
                       "nothing of it was kept, try again")
            else:
                msg = f"cannot download {what}: {_first_line(error)}"
        else:
            raise error
        raise CheckpointError(msg) from None


def _snapshot_of(path: str, filename: str) -> str:
    """The snapshot folder holding ``path``, the cached copy of ``filename`` (which may have ``/``)."""
    folder = path
    for _ in filename.split("/"):
        folder = os.path.dirname(folder)
    return folder

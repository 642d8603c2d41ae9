"""A store URL with a ref: `store/wine@7` (a pinned version), `s3://models/wine@stable` (a channel).

`open_source` wraps the store's own source in a `RefSource` when the URL ends in `@<ref>`
(`reloader.sources.split_ref`). To its reader (a `HotModel`'s follower, `check`, `history`) it is
a store like any other whose manifest is

- a channel's pointer, `<root>/channels/<name>.json`: read with its own validator, so following
  it costs what following `version.json` costs, and moving it swaps the readers to its version;
- a pinned version: the document of the last publish of the main manifest labelled `<label>` in
  `<root>/history.jsonl`, the exact bytes published (a signature stays valid). It never changes:
  once found, every later read is "not modified" without touching the store.

Everything else (bundles, writes, reports, watching, closing) goes to the store's source. The
exception is the history (`history.jsonl`) read through a ref: it is the history of what the ref
names, so the event-time timeline a reader builds from it with `reloader.history` (`entry_for`,
`segments`) is the ref's. Through a channel it is that channel's publishes (their `channel` field
dropped), not the main manifest's; through a pin, the one publish pinned: a pinned version serves
every event time, also one published with an effective time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping

from reloader.errors import MissingObject, SourceError
from reloader.history import HistoryEntry, history_line, read_history
from reloader.layout import HISTORY_NAME, MANIFEST_NAME, channel_key
from reloader.sources import Fetched, Source, Validator, parse_ref


class RefSource(Source):
    """The store behind `inner`, seen through a ref (see the module docstring).

    Args:
        inner: the store root's source (closed with this one).
        ref: `channel:<name>`, `version:<label>`, or a bare name: a bare ref that can be a
            channel name is the channel if the store has that channel at the first read that
            finds either, else the version of that label. The choice is made once, at that first
            successful read, and kept: a channel created later under the name of a pinned label
            does not take over, and a channel deleted later makes reads fail ("not ready"),
            they do not fall back to a version.
        url: the URL with its ref, for messages.

    A ref that names nothing yet (no such channel, no publish of that label) raises
    `MissingObject`, which a reader treats as "not ready": a first load (`HotModel.start`,
    `check`, a job's pre-flight) fails naming the ref; a reader already serving (a channel
    deleted under it) keeps its version and retries. While a pinned label is not found, the
    history is read again only after the main manifest changed (publishers append the history
    before they write the manifest), so an idle store costs one conditional read of
    `version.json` per poll.

    Thread-safety: one reader at a time, like any source (a `HotModel`'s poll thread).
    """

    def __init__(self, inner: Source, ref: str, *, url: str) -> None:
        self.inner = inner
        self.url = url
        self.ref = ref
        self.kind, self.name = parse_ref(ref)  # kind None: channel or version, decided later
        self._pinned: Fetched | None = None
        self._pinned_entry: HistoryEntry | None = None
        self._main_seen: Validator | None = None  # the manifest's at the last history scan
        self._scanned = False

    @property
    def root_url(self) -> str:
        """The store's URL, without the ref."""
        return self.inner.url

    # -- the manifest -----------------------------------------------------------------------------

    def read_manifest(
        self, validator: Validator | None = None, *, key: str = MANIFEST_NAME
    ) -> Fetched | None:
        if key != MANIFEST_NAME:
            return self.inner.read_manifest(validator, key=key)
        if self.kind == "channel":
            return self._read_channel(validator)
        if self.kind == "version":
            return self._read_pinned(validator)
        try:
            fetched = self.inner.read_manifest(validator, key=channel_key(self.name))
        except MissingObject:
            fetched = self._find_pinned()
            if fetched is None:
                raise MissingObject(
                    f"neither a channel {self.name!r} nor a version labelled {self.name!r} in "
                    f"the publish history of {self.root_url}",
                    url=self.url,
                ) from None
            self.kind = "version"
            return None if validator == fetched.validator else fetched
        self.kind = "channel"
        return fetched

    def _read_channel(self, validator: Validator | None) -> Fetched | None:
        try:
            return self.inner.read_manifest(validator, key=channel_key(self.name))
        except MissingObject as e:
            raise MissingObject(
                f"no channel {self.name!r} in {self.root_url}: create it with "
                f"`python -m reloader channel {self.root_url} {self.name} --to VERSION`",
                url=e.url,
                status=e.status,
            ) from None

    def _read_pinned(self, validator: Validator | None) -> Fetched | None:
        fetched = self._find_pinned()
        if fetched is None:
            raise MissingObject(
                f"no version labelled {self.name!r} in the publish history of {self.root_url}",
                url=self.inner.describe(HISTORY_NAME),
            )
        return None if validator == fetched.validator else fetched

    def _find_pinned(self) -> Fetched | None:
        """The pinned document (found once, then kept), or None while it is not published."""
        if self._pinned is not None:
            return self._pinned
        try:
            main = self.inner.read_manifest(self._main_seen)
        except MissingObject:
            main = None  # a store with no manifest tells nothing: read the history each time
            self._main_seen = None
        else:
            if main is None and self._scanned:
                return None  # no publish since the last look
            if main is not None:
                self._main_seen = main.validator
        self._scanned = True
        entry = _last_labelled(read_history(self.inner), self.name)
        if entry is None:
            return None
        # A validator of the document itself: the same pin, the same tag, on every machine.
        tag = '"pin-' + hashlib.sha256(entry.document).hexdigest()[:32] + '"'
        self._pinned_entry = entry
        self._pinned = Fetched(entry.document, Validator(etag=tag))
        return self._pinned

    # -- the rest: the store's own source ---------------------------------------------------------

    def iter_bundle(self, key: str) -> Iterator[bytes]:
        if key == HISTORY_NAME and self.kind == "channel":
            yield _lines(e for e in read_history(self.inner) if e.channel == self.name)
            return
        if key == HISTORY_NAME and self._pinned_entry is not None:
            yield _lines([self._pinned_entry])
            return
        yield from self.inner.iter_bundle(key)

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        if key in (MANIFEST_NAME, HISTORY_NAME):
            raise SourceError(
                f"{self.url} names a {'channel or version' if self.kind is None else self.kind}"
                f"; publish to the store root {self.root_url} (to a channel: --channel NAME)",
                url=self.url,
            )
        self.inner.put(key, data, content_type=content_type)

    def report(self, info: Mapping[str, str]) -> None:
        self.inner.report(info)

    def watch(
        self, callback: Callable[[], None], *, keys: tuple[str, ...] = (MANIFEST_NAME,)
    ) -> Callable[[], None] | None:
        if keys != (MANIFEST_NAME,):
            return self.inner.watch(callback, keys=keys)
        # What our manifest depends on: the pointer, or the history (and the manifest, the
        # signal of a finished publish); both while undecided.
        watched: tuple[str, ...] = ()
        if self.kind != "version":
            watched += (channel_key(self.name),)
        if self.kind != "channel":
            watched += (MANIFEST_NAME, HISTORY_NAME)
        return self.inner.watch(callback, keys=watched)

    def close(self) -> None:
        self.inner.close()

    def describe(self, key: str) -> str:
        return self.inner.describe(key)


def _last_labelled(entries: list[HistoryEntry], label: str) -> HistoryEntry | None:
    """The last publish of the main manifest labelled `label`."""
    for e in reversed(entries):
        if e.channel is None and e.manifest.version == label:
            return e
    return None


def _lines(entries: Iterable[HistoryEntry]) -> bytes:
    """History lines of `entries`, written as the main manifest's."""
    return b"".join(
        history_line(e.manifest, e.document, how=e.how, published_at=e.published_at)
        for e in entries
    )

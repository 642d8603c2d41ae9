"""Typed errors of the reloader. Every error the package raises derives from `ReloaderError`."""

from __future__ import annotations

_LINE_MAX = 160
_TOTAL_MAX = 600


def truncate_js_message(message: str) -> str:
    """Shortens a V8 error text for logs.

    V8 quotes the offending source line; in a minified bundle that line is the whole bundle, so each
    line is cut to a readable length and the total is capped.
    """
    lines = []
    for line in str(message).splitlines():
        line = line.rstrip()
        if line.strip(" ^~…") == "" or line.lstrip().startswith("… ["):
            continue  # V8's caret marker under the quoted source line
        if len(line) > _LINE_MAX:
            line = line[:_LINE_MAX] + f"… [{len(line) - _LINE_MAX} more chars]"
        lines.append(line)
    text = "\n".join(line for line in lines if line)
    if len(text) > _TOTAL_MAX:
        text = text[:_TOTAL_MAX] + f"… [{len(text) - _TOTAL_MAX} more chars]"
    return text


class ReloaderError(Exception):
    """Root of every error raised by `reloader`."""


class BundleError(ReloaderError):
    """A bundle could not be loaded or misbehaved while serving.

    Attributes:
        stage: where it failed: decode, eval, contract, init, buffers, selftest, predict, close.
        js_message: the JavaScript error text, truncated (never a multi-KB minified source line).
    """

    def __init__(self, message: str, *, stage: str, js_message: str | None = None) -> None:
        self.stage = stage
        self.js_message = truncate_js_message(js_message) if js_message else None
        text = f"{message} (stage: {stage})"
        if self.js_message:
            text += f": {self.js_message}"
        super().__init__(text)


class IncompatibleBundle(BundleError):
    """A version that does not fit the columns the job fixed when it started (an input it does
    not have, another output kind, an extra it writes that the version no longer makes): refused
    before it serves, and quarantined like any bad bundle (`reloader.compat`)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, stage="schema")


class BundleTimeout(BundleError):
    """A call into the bundle ran past its timeout and was terminated."""

    def __init__(self, message: str, *, stage: str, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(f"{message}: no result within {timeout:g} s", stage=stage)


class BundleMemoryError(BundleError):
    """The bundle exceeded the V8 heap limit and was stopped."""

    def __init__(self, message: str, *, stage: str, heap_limit: int) -> None:
        self.heap_limit = heap_limit
        super().__init__(f"{message}: V8 heap limit of {heap_limit >> 20} MiB reached", stage=stage)


class BundleOutputError(BundleError):
    """The bundle wrote the wrong number of values or non-finite values."""


class SelfTestError(BundleError):
    """The bundle's outputs on its own selfTest inputs differ from the training framework's."""

    def __init__(self, *, path: str, row: int, max_delta: float, tolerance: float) -> None:
        self.path = path
        self.row = row
        self.max_delta = max_delta
        self.tolerance = tolerance
        super().__init__(
            f"self-test failed on the {path} path: row {row} differs by {max_delta:.3g} "
            f"(tolerance {tolerance:g}); the bundle does not reproduce its training outputs",
            stage="selftest",
        )


class RuntimeClosed(ReloaderError):
    """The runtime was closed (or broken by a timeout or heap blow-up) and cannot predict."""


class InputError(ReloaderError, ValueError):
    """Records or a matrix that cannot be predicted: wrong shape, missing or non-numeric features.

    Attributes:
        row: index of the first offending record (None when the whole input is wrong).
        feature: the offending feature name, when known.
    """

    def __init__(self, message: str, *, row: int | None = None, feature: str | None = None) -> None:
        self.row = row
        self.feature = feature
        super().__init__(message)


class ManifestError(ReloaderError):
    """A `version.json` that cannot be used: not JSON, unknown `format`, or a bad field.

    Attributes:
        field: the offending field (None when the document as a whole is wrong).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        where = f"manifest field `{field}`" if field else "manifest"
        super().__init__(f"{where}: {message}")


class SourceError(ReloaderError):
    """The store could not be read or written: network, HTTP status, S3 error, credentials, disk.

    Attributes:
        url: what was being accessed.
        status: the HTTP status or S3 error code, when there was one.
    """

    def __init__(self, message: str, *, url: str, status: int | str | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(f"{message} ({url})")


class MissingObject(SourceError):
    """The store answered that the object does not exist (HTTP 404, S3 NoSuchKey, no such file)."""


class NotReady(ReloaderError):
    """No model can serve yet: the manifest names a bundle that is not (yet) in the store, or
    `HotModel.predict` was called before `start()`. Retried, never quarantined."""


class IntegrityError(ReloaderError):
    """Downloaded bytes are not what the manifest promised.

    Attributes:
        what: the property checked: sha256, size, size cap, signature.
        expected: what the manifest (or the configuration) asked for.
        actual: what was found.
    """

    def __init__(self, message: str, *, what: str, expected: object, actual: object) -> None:
        self.what = what
        self.expected = expected
        self.actual = actual
        super().__init__(message)


class SignatureError(IntegrityError):
    """A public key is configured and the manifest is unsigned, signed by another key, or its
    signature does not match its contents."""


class CacheError(ReloaderError):
    """The local bundle cache cannot be written (permissions, disk full)."""


class BundleResourceError(BundleMemoryError):
    """The bundle's trial process went past its memory limit (memory outside the V8 heap).

    Attributes:
        memory_limit: bytes the trial process was allowed.
        peak_rss: the trial process's peak resident set, in bytes.
        heap_limit: the V8 heap limit of the trial (as for `BundleMemoryError`).
    """

    def __init__(
        self, message: str, *, stage: str, memory_limit: int, peak_rss: int, heap_limit: int
    ) -> None:
        self.memory_limit = memory_limit
        self.peak_rss = peak_rss
        self.heap_limit = heap_limit
        BundleError.__init__(
            self,
            f"{message}: over its memory limit of {memory_limit >> 20} MiB (peak RSS "
            f"{peak_rss >> 20} MiB, V8 heap limit {heap_limit >> 20} MiB): memory outside the "
            "V8 heap (ArrayBuffers, WebAssembly memory) or one huge allocation; fix the bundle, "
            "or raise memory_limit if it really needs that much",
            stage=stage,
        )


class SandboxError(ReloaderError):
    """The trial process failed before it reached the bundle (interpreter, imports, resources).

    Not the bundle's fault: retried, never quarantined.
    """

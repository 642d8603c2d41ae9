"""mini-racer, made safe for untrusted bundles: no timers, serialized context creation, and an
eval that cannot hang on a wedged context. `reloader.runtime` is the only user.

mini-racer's internals used here (the task API) are pinned by the `<0.13` requirement; without
them `eval_js` falls back to mini-racer's plain `eval`.
"""

from __future__ import annotations

import threading
from typing import Any

from py_mini_racer import JSTimeoutException, MiniRacer

# Evaluated before the bundle: no timers. mini-racer installs setTimeout & co. (built on
# Atomics.waitAsync); a timer callback runs between host calls, outside every call timeout, so a
# callback that loops forever hung the next call for good (measured). Bundles get none of them.
PRELUDE = """(() => {
  const none = (name) => function () {
    throw new Error(name + ' is not available to model bundles (no timers in the host)');
  };
  for (const name of ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval']) {
    globalThis[name] = none(name);  // non-configurable in mini-racer, but writable
  }
  if (typeof Atomics === 'object') Atomics.waitAsync = none('Atomics.waitAsync');
})();"""

_CREATE_LOCK = threading.Lock()
# After a call times out, how long its cancellation may take to come back before the context
# counts as wedged (a running call is terminated at once; see `eval_js`).
_CANCEL_GRACE = 0.5


class Wedged(Exception):
    """The context is busy with JavaScript that no call of ours is running."""


def eval_js(ctx: MiniRacer, code: str, timeout: float) -> Any:
    """`ctx.eval(code, timeout_sec=timeout)` that cannot hang.

    A promise callback (microtask) queued by one call runs after that call has returned its
    result, outside its timeout. If it never ends, the next call waits in the isolate's queue;
    mini-racer's eval then times out, cancels the queued call, and waits for the cancellation
    without a limit: forever (measured with 0.12.4). This does the same through mini-racer's
    task API, but gives the cancellation `_CANCEL_GRACE` seconds and then raises `Wedged`; the
    caller closes the context, which stops the runaway JavaScript. mini-racer's internals are
    pinned by the `<0.13` requirement; without them this falls back to plain `eval`.
    """
    inner = getattr(ctx, "_ctx", None)
    registry = getattr(inner, "_callback_registry", None)
    if _task_api is None or inner is None or registry is None:
        return ctx.eval(code, timeout_sec=timeout)
    sync_future, to_handle, eval_exception = _task_api
    future = sync_future()

    def settle(value: Any) -> None:
        if isinstance(value, eval_exception):
            future.set_exception(value)
        else:
            future.set_result(value)

    callback_id = registry.register(settle)
    dll = inner._get_dll()
    handle = to_handle(inner, code)
    task_id = dll.mr_eval(inner._ctx, handle.raw, callback_id)
    try:
        return future.get(timeout=timeout)
    except JSTimeoutException:
        dll.mr_cancel_task(inner._ctx, task_id)
        try:
            future.get(timeout=_CANCEL_GRACE)
        except JSTimeoutException:
            raise Wedged() from None
        except Exception:
            pass  # the cancellation's own error: the call was terminated
        raise
    finally:
        if future._settled:
            registry.cleanup(callback_id)


def _load_task_api() -> tuple[Any, Any, Any] | None:
    try:
        from py_mini_racer._sync_future import SyncFuture
        from py_mini_racer._types import JSEvalException
        from py_mini_racer._value_handle import python_to_value_handle
    except ImportError:
        return None
    return SyncFuture, python_to_value_handle, JSEvalException


_task_api = _load_task_api()


def new_context() -> MiniRacer:
    """A new V8 context. Creation is serialized process-wide: two contexts created at the same
    moment crash the process (measured)."""
    with _CREATE_LOCK:
        return MiniRacer()

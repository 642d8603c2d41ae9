"""The status page: rendered on the server; a few lines of JS send a rollback, a promotion or an
abort with the token.

Every value a reader reported (the fleet tables) is untrusted and escaped like the rest.
"""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 2em; }
th, td { border-bottom: 1px solid #ddd; padding: .3em .8em; text-align: left; }
code { font-size: 12px; }
.live { font-weight: bold; color: #05631d; }
.behind { color: #8a4b00; }
.rolled-back { font-weight: bold; color: #fff; background: #a00; padding: 0 .4em; }
.stale td { color: #888; }
#status { min-height: 1.4em; color: #a00; }
"""

# Each button says what to POST: `data-action` (rollback, promote, abort), the model, and the
# bundle (rollback) or the channel (promote, abort).
_SCRIPT = """
const tokenBox = document.getElementById('token');
tokenBox.value = sessionStorage.getItem('store-token') || '';
tokenBox.addEventListener('change', () => sessionStorage.setItem('store-token', tokenBox.value));
for (const button of document.querySelectorAll('button[data-action]')) {
  button.addEventListener('click', async () => {
    const status = document.getElementById('status');
    const {action, model, channel, sha256} = button.dataset;
    let path = '/api/models/' + encodeURIComponent(model);
    path += channel ? '/channels/' + encodeURIComponent(channel) + '/' + action : '/rollback';
    status.textContent = action + ' ' + model + (channel ? ' channel ' + channel : '') + '…';
    const r = await fetch(path, {
      method: 'POST',
      headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + tokenBox.value},
      body: JSON.stringify(channel ? {} : {sha256: sha256}),
    });
    if (r.ok) { location.reload(); return; }
    const body = await r.json().catch(() => ({}));
    status.textContent = action + ' failed: HTTP ' + r.status + ' ' + (body.detail || '');
  });
}
"""


def render_status_page(models: list[dict[str, Any]], *, writable: bool) -> str:
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<title>tf-on-flink model store</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Model store</h1>",
    ]
    if writable:
        parts.append(
            "<p><label>Token for rollbacks, promotions and aborts: "
            "<input id=token type=password autocomplete=off></label></p>"
        )
    else:
        parts.append(
            "<p>Read-only store (no --token-file): rollback is disabled, as are promote and "
            "abort.</p>"
        )
    parts.append("<p id=status role=status></p>")
    if not models:
        parts.append(
            "<p>No models yet. Publish one with <code>python -m reloader publish</code>.</p>"
        )
    for m in models:
        name = escape(m["name"])
        current = m["current"]
        live = (
            f'<span class=live data-testid="live-{name}">{escape(current["version"])}</span> '
            f"<code>{escape(current['sha256'][:12])}</code>, created {escape(current['created'])}"
            if current
            else "no manifest"
        )
        parts.append(f"<h2 id=model-{name}>{name}</h2><p>Live: {live}</p>")
        parts.append(
            "<table><thead><tr><th>bundle</th><th>versions</th><th>size</th><th>stored</th>"
            "<th></th></tr></thead><tbody>"
        )
        for b in m["bundles"]:
            sha = escape(b["sha256"])
            labels = escape(", ".join(b["versions"])) or "—"
            if b["current"]:
                action = "<span class=live>live</span>"
            elif writable:
                action = (
                    f'<button class=rollback data-action=rollback data-model="{name}" '
                    f'data-sha256="{sha}" data-testid="rollback-{name}-{sha[:12]}">'
                    "roll back to this</button>"
                )
            else:
                action = ""
            parts.append(
                f"<tr><td><code>{sha[:12]}</code></td><td>{labels}</td>"
                f"<td>{b['size']:,}</td><td>{escape(b['created'])}</td><td>{action}</td></tr>"
            )
        parts.append("</tbody></table>")
        parts.extend(_fleet(m))
        for channel in m.get("channels") or []:
            parts.extend(_channel(m, channel, writable=writable))
        if m["history"]:
            parts.append("<details><summary>history</summary><ol>")
            for h in m["history"][:50]:
                to = f" to channel {escape(h['channel'])}" if h.get("channel") else ""
                parts.append(
                    f"<li>{escape(h['published_at'])}: {escape(h['how'])}{to} "
                    f"{escape(h['version'])} <code>{escape(h['sha256'][:12])}</code></li>"
                )
            parts.append("</ol></details>")
    if writable:
        parts.append(f"<script>{_SCRIPT}</script>")
    parts.append("</body></html>")
    return "".join(parts)


def _fleet(m: dict[str, Any]) -> list[str]:
    """The readers polling model `m`'s manifest: the rollout summary, then one row per reader."""
    name = escape(m["name"])
    rollout = m.get("rollout")
    if rollout is None:
        return []
    fleet = m.get("fleet") or []
    if not fleet:
        return [
            f'<p data-testid="rollout-{name}">Fleet: no reader has reported a poll since the '
            "server started.</p>"
        ]
    return [
        f'<h3>fleet</h3><p data-testid="rollout-{name}">{_summary(rollout)}</p>',
        *_readers(fleet, f"fleet-{name}"),
    ]


def _channel(m: dict[str, Any], channel: dict[str, Any], *, writable: bool) -> list[str]:
    """A channel of model `m`: where it points, promote and abort, its readers and rollbacks."""
    name, ch = escape(m["name"]), escape(channel["name"])
    pointer, live = channel["current"], m["current"]
    if pointer is None:
        at = "no pointer (deleted, or not a valid manifest)"
    else:
        at = (
            f'<span data-testid="channel-{name}-{ch}">{escape(pointer["version"])}</span> '
            f"<code>{escape(pointer['sha256'][:12])}</code>, created {escape(pointer['created'])}"
        )
    same = (
        pointer is not None
        and live is not None
        and (pointer["sha256"], pointer["version"]) == (live["sha256"], live["version"])
    )
    if same:
        at += " (the live version)"
    elif pointer is not None and writable:
        at += "".join(
            f' <button data-action={action} data-model="{name}" data-channel="{ch}" '
            f'data-testid="{action}-{name}-{ch}">{action}</button>'
            for action in ("promote", "abort")
        )
    parts = [f"<h3 id=channel-{name}-{ch}>channel {ch}</h3><p>Points at: {at}</p>"]
    fleet = channel["fleet"]
    if not fleet:
        parts.append(f'<p data-testid="rollout-{name}-{ch}">No reader of this channel yet.</p>')
        return parts
    rollout = channel["rollout"]
    summary = _summary(rollout)
    if rollout["rolled_back"]:
        summary += (
            f"; <span class=rolled-back>rolled back</span> by {rollout['rolled_back']} of "
            f"{rollout['clients']} subtasks"
        )
    parts.append(f'<p data-testid="rollout-{name}-{ch}">{summary}</p>')
    parts.extend(_readers(fleet, f"fleet-{name}-{ch}"))
    return parts


def _summary(rollout: dict[str, Any]) -> str:
    version = escape(rollout["version"] or "no manifest")
    if rollout["complete"]:
        summary = f"<span class=live>rollout complete</span>: {rollout['clients']} on {version}"
    else:
        summary = f"{rollout['on_current']} of {rollout['clients']} on {version}"
    if rollout["stale"]:
        summary += f" ({rollout['stale']} stale, not counted)"
    return summary


def _readers(fleet: list[dict[str, Any]], testid: str) -> list[str]:
    parts = [
        f'<table data-testid="{testid}"><thead><tr><th>client</th><th>job</th>'
        "<th>subtask</th><th>role</th><th>address</th><th>version</th><th>sha256</th>"
        "<th>last poll</th><th></th></tr></thead><tbody>",
    ]
    for f in fleet:
        row = " class=stale" if f["stale"] else ""
        if f["rolled_back"]:
            status = "<span class=rolled-back>rolled back</span>"
        elif f["stale"]:
            status = "stale"
        elif f["channel"] is None and f["follows"]:  # reads version.json for a pinned version
            status = f"follows {escape(f['follows'])}"
        elif f["current"]:
            status = "<span class=live>current</span>"
        else:
            status = "<span class=behind>behind</span>"
        if f["state"]:
            status += f" <small>{escape(f['state'])}</small>"
        cells = [f["client"], f["job"], f["subtask"], f["role"], f["address"], f["version"]]
        parts.append(
            f"<tr{row}>"
            + "".join(f"<td>{escape(c) if c else '—'}</td>" for c in cells)
            + f"<td><code>{escape((f['sha256'] or '—')[:12])}</code></td>"
            f"<td>{escape(f['last_poll'])} ({f['seconds_since']:.0f} s ago)</td>"
            f"<td>{status}</td></tr>"
        )
    parts.append("</tbody></table>")
    return parts

"""The status page: rendered on the server; a few lines of JS send the rollback with the token.

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
.stale td { color: #888; }
#status { min-height: 1.4em; color: #a00; }
"""

_SCRIPT = """
const tokenBox = document.getElementById('token');
tokenBox.value = sessionStorage.getItem('store-token') || '';
tokenBox.addEventListener('change', () => sessionStorage.setItem('store-token', tokenBox.value));
for (const button of document.querySelectorAll('button.rollback')) {
  button.addEventListener('click', async () => {
    const status = document.getElementById('status');
    status.textContent = 'rolling back ' + button.dataset.model + '…';
    const r = await fetch('/api/models/' + encodeURIComponent(button.dataset.model) + '/rollback', {
      method: 'POST',
      headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + tokenBox.value},
      body: JSON.stringify({sha256: button.dataset.sha256}),
    });
    if (r.ok) { location.reload(); return; }
    const body = await r.json().catch(() => ({}));
    status.textContent = 'rollback failed: HTTP ' + r.status + ' ' + (body.detail || '');
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
            "<p><label>Token for rollbacks: <input id=token type=password autocomplete=off>"
            "</label></p>"
        )
    else:
        parts.append("<p>Read-only store (no --token-file): rollback is disabled.</p>")
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
                    f'<button class=rollback data-model="{name}" data-sha256="{sha}" '
                    f'data-testid="rollback-{name}-{sha[:12]}">roll back to this</button>'
                )
            else:
                action = ""
            parts.append(
                f"<tr><td><code>{sha[:12]}</code></td><td>{labels}</td>"
                f"<td>{b['size']:,}</td><td>{escape(b['created'])}</td><td>{action}</td></tr>"
            )
        parts.append("</tbody></table>")
        parts.extend(_fleet(m))
        if m["history"]:
            parts.append("<details><summary>history</summary><ol>")
            for h in m["history"][:50]:
                parts.append(
                    f"<li>{escape(h['published_at'])}: {escape(h['how'])} "
                    f"{escape(h['version'])} <code>{escape(h['sha256'][:12])}</code></li>"
                )
            parts.append("</ol></details>")
    if writable:
        parts.append(f"<script>{_SCRIPT}</script>")
    parts.append("</body></html>")
    return "".join(parts)


def _fleet(m: dict[str, Any]) -> list[str]:
    """The readers polling model `m`: the rollout summary, then one row per reader."""
    name = escape(m["name"])
    rollout = m.get("rollout")
    fleet = m.get("fleet") or []
    if rollout is None:
        return []
    if not fleet:
        return [
            f'<p data-testid="rollout-{name}">Fleet: no reader has reported a poll since the '
            "server started.</p>"
        ]
    version = escape(rollout["version"] or "no manifest")
    if rollout["complete"]:
        summary = f"<span class=live>rollout complete</span>: {rollout['clients']} on {version}"
    else:
        summary = f"{rollout['on_current']} of {rollout['clients']} on {version}"
    if rollout["stale"]:
        summary += f" ({rollout['stale']} stale, not counted)"
    parts = [
        f'<h3>fleet</h3><p data-testid="rollout-{name}">{summary}</p>',
        f'<table data-testid="fleet-{name}"><thead><tr><th>client</th><th>job</th>'
        "<th>subtask</th><th>address</th><th>version</th><th>sha256</th><th>last poll</th>"
        "<th></th></tr></thead><tbody>",
    ]
    for f in fleet:
        if f["stale"]:
            row, state = " class=stale", "stale"
        elif f["current"]:
            row, state = "", "<span class=live>current</span>"
        else:
            row, state = "", "<span class=behind>behind</span>"
        cells = [f["client"], f["job"], f["subtask"], f["address"], f["version"]]
        parts.append(
            f"<tr{row}>"
            + "".join(f"<td>{escape(c) if c else '—'}</td>" for c in cells)
            + f"<td><code>{escape((f['sha256'] or '—')[:12])}</code></td>"
            f"<td>{escape(f['last_poll'])} ({f['seconds_since']:.0f} s ago)</td>"
            f"<td>{state}</td></tr>"
        )
    parts.append("</tbody></table>")
    return parts

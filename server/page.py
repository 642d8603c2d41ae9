"""The status page: rendered on the server; a few lines of JS send the rollback with the token."""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 2em; }
th, td { border-bottom: 1px solid #ddd; padding: .3em .8em; text-align: left; }
code { font-size: 12px; }
.live { font-weight: bold; color: #05631d; }
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

"""The DVC plot template the pipeline's charts use: DVC's `simple` line chart with whole epochs on x.

DVC's built-in templates draw x as a continuous axis, so a 3-epoch run gets ticks at 1.0, 1.5, 2.0, ...
This one asks Vega-Lite for a tick step of at least 1 and integer labels (`tickMinStep`, format `d`).
`auxcli pipeline` writes it to `.dvc/plots/<name>.json`, where `dvc plots` finds templates by name
(dvc_render's `get_template`); anchors `<DVC_METRIC_*>` are DVC's and filled by it.
"""

from __future__ import annotations

import json
from pathlib import Path

EPOCH_TEMPLATE = "auxcli-epochs"


def _anchor(name: str) -> str:
    return f"<DVC_METRIC_{name.upper()}>"


EPOCH_TEMPLATE_CONTENT: dict = {
    "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
    "data": {"values": _anchor("data")},
    "title": {"text": _anchor("title"), "anchor": "middle"},
    "params": [_anchor("zoom_and_pan")],
    "width": _anchor("plot_width"),
    "height": _anchor("plot_height"),
    "mark": {"type": "line", "point": True, "tooltip": {"content": "data"}},
    "encoding": {
        "x": {"field": _anchor("x"), "type": "quantitative", "title": _anchor("x_label"),
              "axis": {"tickMinStep": 1, "format": "d"}},
        "y": {"field": _anchor("y"), "type": "quantitative", "title": _anchor("y_label"), "scale": {"zero": False}},
        "color": _anchor("color"),
        "strokeDash": _anchor("stroke_dash"),
        "tooltip": _anchor("tooltip"),
    },
}


def ensure_plot_template(dvc_dir: Path = Path(".dvc")) -> Path | None:
    """Write the template into `<dvc_dir>/plots/` when the project uses DVC; its path, else None."""
    if not dvc_dir.is_dir():
        return None
    from auxcli.runfolder import atomic_write_text

    path = dvc_dir / "plots" / f"{EPOCH_TEMPLATE}.json"
    path.parent.mkdir(exist_ok=True)
    atomic_write_text(path, json.dumps(EPOCH_TEMPLATE_CONTENT, indent=2) + "\n")
    return path

"""Draw the chapters' schematics (data flow of each method) as SVG files beside this script.

Run ``python book/figures/make_schematics.py``; the SVGs are committed, so building the book needs nothing.
Each schematic is a list of boxes (position, role, lines of text) and arrows (from, to, label).
"""
from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).parent
FILL = {"client": "#dbeafe", "server": "#fde7c8", "model": "#eeeeee", "result": "#d9f2d9", "note": "#ffffff"}
STROKE = {"client": "#1d4ed8", "server": "#b45309", "model": "#555555", "result": "#15803d", "note": "#999999"}
W, H, LINE = 170, 62, 15      # default box size, line height


def svg(boxes: dict, arrows: list, width: int, height: int, title: str) -> str:
    """``boxes``: id -> (x, y, role, [lines], optional (w, h)); ``arrows``: (from, to, label, optional side)."""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">',
           f"<title>{escape(title)}</title>",
           '<defs><marker id="a" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#333"/></marker></defs>']
    geom = {}
    for key, (x, y, role, lines, *size) in boxes.items():
        w, h = size[0] if size else (W, H)
        geom[key] = (x, y, w, h)
        dash = ' stroke-dasharray="4 3"' if role == "note" else ""
        out.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="8" fill="{FILL[role]}" '
                   f'stroke="{STROKE[role]}" stroke-width="1.5"{dash}/>')
        top = y + h / 2 - (len(lines) - 1) * LINE / 2 + 4
        for i, line in enumerate(lines):
            weight = ' font-weight="bold"' if i == 0 and role != "note" else ""
            out.append(f'<text x="{x + w / 2}" y="{top + i * LINE}" text-anchor="middle"{weight}>{escape(line)}</text>')
    for frm, to, label, *side in arrows:
        x1, y1, w1, h1 = geom[frm]
        x2, y2, w2, h2 = geom[to]
        if side and side[0] == "down":
            a, b = (x1 + w1 / 2, y1 + h1), (x2 + w2 / 2, y2)
        elif side and side[0] == "up":
            a, b = (x1 + w1 / 2, y1), (x2 + w2 / 2, y2 + h2)
        elif side and side[0] == "left":
            a, b = (x1, y1 + h1 / 2), (x2 + w2, y2 + h2 / 2)
        else:
            a, b = (x1 + w1, y1 + h1 / 2), (x2, y2 + h2 / 2)
        out.append(f'<line x1="{a[0]}" y1="{a[1]}" x2="{b[0]}" y2="{b[1]}" stroke="#333" stroke-width="1.4" '
                   'marker-end="url(#a)"/>')
        if label:
            mx, my = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
            vertical = bool(side) and side[0] in ("up", "down")
            out.append(f'<text x="{mx + (6 if vertical else 0)}" y="{my + (4 if vertical else -6)}" '
                       f'text-anchor="{"start" if vertical else "middle"}" font-size="11" fill="#333">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


BOX = (220, 70)
LEFT, RIGHT, TOP, BOTTOM = 10, 300, 20, 150   # a 2 x 2 grid read as a snake: left to right, down, right to left


def snake(title, a, b, c, d, labels=("", "", ""), note=None):
    """Four stages in two rows: a -> b, then down to c, then c -> d right to left (about 530 px wide)."""
    boxes = {"a": (LEFT, TOP, a[0], a[1], BOX), "b": (RIGHT, TOP, b[0], b[1], BOX),
             "c": (RIGHT, BOTTOM, c[0], c[1], BOX), "d": (LEFT, BOTTOM, d[0], d[1], BOX)}
    if note:
        boxes["note"] = (LEFT, BOTTOM + 85, "note", note, (220, 40))
    arrows = [("a", "b", labels[0]), ("b", "c", labels[1], "down"), ("c", "d", labels[2], "left")]
    return title, 530, BOTTOM + (135 if note else 80), boxes, arrows


SCHEMATICS = {
    "fedavg": ("FedAvg and an unlearning request: Retrain is the reference", 530, 320, {
        "clients": (LEFT, TOP, "client", ["clients 1..K", "local SGD on own data", "(data never leaves)"], BOX),
        "server": (RIGHT, TOP, "server", ["server", "w = sum_k (n_k / n) w_k", "(FedAvg)"], BOX),
        "request": (LEFT, BOTTOM, "note", ["client k asks", "to be forgotten"], BOX),
        "retrain": (RIGHT, BOTTOM, "result", ["Retrain", "FedAvg without client k", "(the reference)"], BOX),
        "method": (RIGHT, 245, "result", ["an unlearning method", "should end close to Retrain", "at a fraction of its cost"], BOX),
    }, [("clients", "server", "w_k"), ("request", "retrain", ""), ("retrain", "method", "compare", "down")]),
    "tis": snake("TIS: curvature from every client, a score per parameter, a reset",
                 ("client", ["every client", "Hessian diagonals on", "forget / retain data (Eq. 29)"]),
                 ("server", ["server", "aggregates h and h'", "(Eq. 30)"]),
                 ("server", ["score", "TIS_i = (h'_i / h_i)^2", "(Eq. 28)"]),
                 ("result", ["reset per layer", "top entries holding", "a fraction gamma of TIS"]),
                 ("diagonals", "", ""), note=["optional: one round of", "training on reset entries"]),
    "not": ("NoT: negate the first layer, then recover on the retained clients", 530, 230, {
        "model": (LEFT, TOP, "model", ["trained model", "theta"], BOX),
        "neg": (RIGHT, TOP, "server", ["negate layer 1", "W_1 -> -W_1", "(norms kept)"], BOX),
        "recover": (RIGHT, BOTTOM, "client", ["recovery", "FedAvg on the", "retained clients"], BOX),
    }, [("model", "neg", ""), ("neg", "recover", "near chance", "down")]),
    "foul": snake("FOUL: learn to unlearn during training, then rounds of gradients combined on the server",
                  ("client", ["L2U training (FedAvg)", "causal encoder K: z_K", "non-causal V: z_V"]),
                  ("client", ["each round, clients", "upload the gradient of", "their loss w.r.t. V only"]),
                  ("server", ["server (Theorem 1)", "d* = g_0 + kappa |g_0| g_G/|g_G|", "descend R, ascend F"]),
                  ("result", ["update V", "K and the classifier", "stay unchanged"]), ("", "g_u", "")),
    "dpul": snake("DPUL: roll back, reconstruct, recover on the server",
                  ("model", ["training history", "every client's update", "of every round"]),
                  ("server", ["rollback", "freeze where |dU| / lambda", "> |dM| (high-weight)"]),
                  ("server", ["reconstruction", "VAEs rebuild the rest", "of M_T without target"]),
                  ("result", ["projected recovery", "steps on the server's", "small data set"])),
    "benchmark": snake("One experiment: prepare once, run every method, measure all alike",
                       ("note", ["experiment: scenarios,", "methods, sizes per scale,", "seeds"]),
                       ("client", ["prepare", "data, partition,", "FedAvg original"]),
                       ("server", ["every method", "from the same model", "(Retrain first)"]),
                       ("result", ["measure and record", "one measure for all,", "one JSON per seed"])),
    "flower": snake("On Flower: the package's server code, every client round sent as messages",
                    ("server", ["ServerApp", "prepare + each method", "(the package's own code)"]),
                    ("server", ["client runtime", "FlowerClients: one", "message per client"]),
                    ("client", ["ClientApp on each node", "train / query.curvature", "on its own partition"]),
                    ("result", ["replies by partition id", "aggregated as in process:", "the same weights"]),
                    ("train_round", "Flower messages", "states, diagonals")),
}

if __name__ == "__main__":
    for name, (title, width, height, boxes, arrows) in SCHEMATICS.items():
        (HERE / f"{name}.svg").write_text(svg(boxes, arrows, width, height, title))
        print("wrote", name)

// A small line chart in inline SVG (no library): series of {name, points: [{x: Date, y}]}.

const NS = "http://www.w3.org/2000/svg";
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];

function svg(tag, attrs = {}) {
  const el = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  return el;
}

export function lineChart(container, series, { unit = "", width = 640, height = 220 } = {}) {
  container.replaceChildren();
  const points = series.flatMap((s) => s.points.filter((p) => p.y !== null && p.y !== undefined));
  if (!points.length) {
    const empty = document.createElement("p");
    empty.className = "hint";
    empty.textContent = "No data in this period.";
    container.appendChild(empty);
    return;
  }
  const pad = { left: 48, right: 12, top: 12, bottom: 28 };
  const xs = points.map((p) => p.x.getTime());
  const ys = points.map((p) => p.y);
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(0, ...ys);
  let y1 = Math.max(...ys);
  if (y1 === y0) y1 = y0 + 1;
  const sx = (x) => pad.left + ((x - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const sy = (y) => height - pad.bottom - ((y - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "chart-svg" });
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4;
    root.appendChild(svg("line", { x1: pad.left, x2: width - pad.right, y1: sy(y), y2: sy(y), class: "grid-line" }));
    const label = svg("text", { x: pad.left - 6, y: sy(y) + 4, "text-anchor": "end", class: "axis" });
    label.textContent = `${Math.round(y * 10) / 10}${unit}`;
    root.appendChild(label);
  }
  for (const x of [x0, (x0 + x1) / 2, x1]) {
    const label = svg("text", { x: sx(x), y: height - 8, "text-anchor": "middle", class: "axis" });
    label.textContent = new Date(x).toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
    root.appendChild(label);
  }
  series.forEach((s, i) => {
    const pts = s.points.filter((p) => p.y !== null && p.y !== undefined);
    if (!pts.length) return;
    const d = pts.map((p, j) => `${j ? "L" : "M"}${sx(p.x.getTime()).toFixed(1)},${sy(p.y).toFixed(1)}`).join("");
    const path = svg("path", { d, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 2 });
    const title = svg("title");
    title.textContent = s.name;
    path.appendChild(title);
    root.appendChild(path);
  });
  container.appendChild(root);
  const legend = document.createElement("ul");
  legend.className = "chart-legend";
  series.forEach((s, i) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.backgroundColor = COLORS[i % COLORS.length];
    item.append(swatch, document.createTextNode(s.name));
    legend.appendChild(item);
  });
  container.appendChild(legend);
}

// Hand-drawn SVG charts (no chart library): stacked bars of alarms over time and a line chart of
// a percentage over time. Colours come from CSS classes (the CSP allows no inline styles).

import { fmtShortTime, fmtTime } from "./ui.js";

const NS = "http://www.w3.org/2000/svg";

function s(tag, attrs, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

const W = 720, H = 220, L = 44, R = 12, T = 12, B = 28;

function frame(title, max, unit) {
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  svg.append(s("title", {}, title));
  for (let i = 0; i <= 4; i++) {
    const y = T + ((H - T - B) * i) / 4;
    svg.append(s("line", { class: "grid", x1: L, x2: W - R, y1: y, y2: y }));
    const v = max - (max * i) / 4;
    svg.append(s("text", { x: L - 6, y: y + 4, "text-anchor": "end" }, (Number.isInteger(v) ? v : v.toFixed(1)) + unit));
  }
  svg.append(s("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  return svg;
}

function niceMax(v) {
  if (v <= 4) return 4;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return Math.ceil((m * p) / 4) * 4;
  return v;
}

const SEVERITIES = ["critical", "major", "minor"];

/** Alarms over time: one stacked bar per bucket, by severity. */
export function alarmBars(series, title) {
  const totals = series.map((b) => SEVERITIES.reduce((n, k) => n + (b.counts[k] || 0), 0));
  const max = niceMax(Math.max(0, ...totals));
  const svg = frame(title, max, "");
  const n = series.length || 1;
  const slot = (W - L - R) / n;
  const scale = (H - T - B) / max;
  series.forEach((b, i) => {
    let y = H - B;
    const x = L + i * slot + slot * 0.12;
    for (const k of SEVERITIES) {
      const v = b.counts[k] || 0;
      if (!v) continue;
      const hgt = v * scale;
      y -= hgt;
      const rect = s("rect", { class: k, x: x.toFixed(1), y: y.toFixed(1), width: (slot * 0.76).toFixed(1), height: hgt.toFixed(1) });
      rect.append(s("title", {}, `${fmtTime(b.start)}: ${v} ${k}`));
      svg.append(rect);
    }
    if (i % Math.ceil(n / 6) === 0) {
      svg.append(s("text", { x: (L + i * slot + slot / 2).toFixed(1), y: H - 8, "text-anchor": "middle" }, fmtShortTime(b.start)));
    }
  });
  return svg;
}

/** A percentage over time: points [{at, value}] (any order), from `from` to `to` (unix ms). */
export function percentLine(points, from, to, title, cls) {
  const svg = frame(title, 100, "%");
  const span = Math.max(1, to - from);
  const x = (t) => L + ((t - from) / span) * (W - L - R);
  const y = (v) => T + (1 - Math.min(100, Math.max(0, v)) / 100) * (H - T - B);
  const sorted = [...points].sort((a, b) => a.at - b.at);
  if (sorted.length) {
    const d = sorted.map((p, i) => `${i ? "L" : "M"}${x(p.at).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ");
    svg.append(s("path", { class: "line " + (cls || ""), d }));
  }
  for (let i = 0; i <= 4; i++) {
    const t = from + (span * i) / 4;
    svg.append(s("text", { x: x(t).toFixed(1), y: H - 8, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, fmtShortTime(t)));
  }
  return svg;
}

// Brewlytics built-in dashboard: polls /api/summary and draws SVG charts and tables.
// No libraries; every value from the server is written with textContent or as an attribute.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const REFRESH_MS = 5000;
const MONEY = new Set(["revenue", "amount", "total", "average_order_value"]);

const $ = (id) => document.getElementById(id);
let timer = null;
let inFlight = 0;
let storesLoaded = false;

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function htmlEl(name, attrs, text) {
  const el = document.createElement(name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function money(v) {
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  return n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

function count(v) {
  const n = Number(v);
  return Number.isFinite(n) ? n.toLocaleString("en-US") : String(v);
}

function cellText(column, v) {
  if (v === null || v === undefined) return "";
  if (MONEY.has(column)) return money(v);
  if (typeof v === "number") return count(v);
  if (/_at$/.test(column) && typeof v === "string") return v.replace("T", " ").replace("Z", "");
  if (column === "order_id") return String(v).slice(0, 8);
  return String(v);
}

// Rows as objects keyed by column name.
function records(q) {
  if (!q) return [];
  return q.rows.map((r) => Object.fromEntries(q.columns.map((c, i) => [c, r[i]])));
}

function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
}

function empty(el) {
  clear(el);
  el.appendChild(htmlEl("div", { class: "empty" }, "No data for this range."));
}

function niceMax(max) {
  if (max <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(max)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}

// Vertical bars: one per row, labelled below; the value on hover and in data-value.
function columnChart(el, rows, labelKey, valueKey, opts) {
  opts = opts || {};
  if (!rows.length) return empty(el);
  clear(el);
  const W = opts.width || 900, H = opts.height || 220, left = 54, bottom = 30, top = 14;
  const values = rows.map((r) => Number(r[valueKey]) || 0);
  const max = niceMax(Math.max(...values));
  const plotW = W - left - 8, plotH = H - top - bottom;
  const step = plotW / rows.length;
  const bw = Math.max(2, step * 0.75);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.title || valueKey });
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    svg.appendChild(svgEl("line", { class: "axis", x1: left, x2: W - 8, y1: y, y2: y }));
    svg.appendChild(svgEl("text", { x: left - 6, y: y + 3, "text-anchor": "end" }, count((max * i) / 4)));
  }
  const every = Math.ceil(rows.length / (opts.maxLabels || 16));
  rows.forEach((r, i) => {
    const v = values[i];
    const h = (plotH * v) / max;
    const x = left + i * step + (step - bw) / 2;
    const label = String(r[labelKey]);
    const rect = svgEl("rect", {
      class: "bar", x: x.toFixed(1), y: (top + plotH - h).toFixed(1), width: bw.toFixed(1),
      height: Math.max(0, h).toFixed(1), "data-label": label, "data-value": String(r[valueKey]),
    });
    rect.appendChild(svgEl("title", {}, `${label}: ${MONEY.has(valueKey) ? money(r[valueKey]) : count(r[valueKey])}`));
    svg.appendChild(rect);
    if (i % every === 0) {
      const text = opts.shortLabel ? opts.shortLabel(label) : label;
      svg.appendChild(svgEl("text", { x: (x + bw / 2).toFixed(1), y: H - bottom + 14, "text-anchor": "middle" }, text));
    }
  });
  el.appendChild(svg);
}

// Horizontal bars with the label on the left and the value at the bar's end.
function barList(el, rows, labelKey, valueKey) {
  if (!rows.length) return empty(el);
  clear(el);
  const W = 420, row = 24, left = 130, right = 70;
  const H = rows.length * row + 6;
  const values = rows.map((r) => Number(r[valueKey]) || 0);
  const max = Math.max(...values) || 1;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": valueKey });
  rows.forEach((r, i) => {
    const y = i * row + 4;
    const w = ((W - left - right) * values[i]) / max;
    const label = String(r[labelKey]);
    svg.appendChild(svgEl("text", { x: left - 6, y: y + 14, "text-anchor": "end" }, label.length > 22 ? label.slice(0, 21) + "…" : label));
    const rect = svgEl("rect", {
      class: "bar", x: left, y, width: Math.max(1, w).toFixed(1), height: row - 8,
      "data-label": label, "data-value": String(r[valueKey]),
    });
    const shown = MONEY.has(valueKey) ? money(r[valueKey]) : count(r[valueKey]);
    rect.appendChild(svgEl("title", {}, `${label}: ${shown}`));
    svg.appendChild(rect);
    svg.appendChild(svgEl("text", { class: "value", x: (left + w + 4).toFixed(1), y: y + 14 }, shown));
  });
  el.appendChild(svg);
}

// A line with a dot per row.
function lineChart(el, rows, labelKey, valueKey) {
  if (!rows.length) return empty(el);
  clear(el);
  const W = 420, H = 200, left = 46, bottom = 26, top = 12;
  const values = rows.map((r) => Number(r[valueKey]) || 0);
  const max = niceMax(Math.max(...values));
  const plotW = W - left - 10, plotH = H - top - bottom;
  const xAt = (i) => left + (rows.length === 1 ? plotW / 2 : (plotW * i) / (rows.length - 1));
  const yAt = (v) => top + plotH - (plotH * v) / max;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": valueKey });
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    svg.appendChild(svgEl("line", { class: "axis", x1: left, x2: W - 10, y1: y, y2: y }));
    svg.appendChild(svgEl("text", { x: left - 6, y: y + 3, "text-anchor": "end" }, money((max * i) / 4)));
  }
  svg.appendChild(svgEl("polyline", { class: "line", points: values.map((v, i) => `${xAt(i).toFixed(1)},${yAt(v).toFixed(1)}`).join(" ") }));
  const every = Math.ceil(rows.length / 6);
  rows.forEach((r, i) => {
    const label = String(r[labelKey]);
    const dot = svgEl("circle", { class: "dot", cx: xAt(i).toFixed(1), cy: yAt(values[i]).toFixed(1), r: 3, "data-label": label, "data-value": String(r[valueKey]) });
    dot.appendChild(svgEl("title", {}, `${label}: ${money(r[valueKey])}`));
    svg.appendChild(dot);
    if (i % every === 0) svg.appendChild(svgEl("text", { x: xAt(i).toFixed(1), y: H - 8, "text-anchor": "middle" }, label.slice(5)));
  });
  el.appendChild(svg);
}

function table(el, q, maxRows) {
  if (!q || !q.rows.length) return empty(el);
  clear(el);
  const t = htmlEl("table");
  const head = htmlEl("tr");
  const numeric = q.columns.map((c, i) => q.rows.every((r) => r[i] === null || typeof r[i] === "number" || (MONEY.has(c))) || /_pct$/.test(c));
  q.columns.forEach((c, i) => head.appendChild(htmlEl("th", numeric[i] ? { class: "num" } : {}, c.replace(/_/g, " "))));
  t.appendChild(htmlEl("thead")).appendChild(head);
  const body = t.appendChild(htmlEl("tbody"));
  q.rows.slice(0, maxRows || 50).forEach((r) => {
    const tr = htmlEl("tr");
    q.columns.forEach((c, i) => {
      const attrs = { "data-column": c };
      if (numeric[i]) attrs.class = "num";
      tr.appendChild(htmlEl("td", attrs, cellText(c, r[i])));
    });
    body.appendChild(tr);
  });
  el.appendChild(t);
  if (q.rows.length > (maxRows || 50)) el.appendChild(htmlEl("div", { class: "more" }, `and ${q.rows.length - (maxRows || 50)} more`));
}

function setKpi(id, display, raw) {
  const el = $(id);
  el.textContent = display;
  el.setAttribute("data-value", String(raw));
}

function render(data) {
  const k = data.kpis;
  setKpi("kpi-today-revenue", money(k.today_revenue), k.today_revenue);
  $("kpi-today-orders").textContent = `${count(k.today_orders)} orders on ${data.today}`;
  setKpi("kpi-revenue", money(k.revenue), k.revenue);
  setKpi("kpi-orders", count(k.orders), k.orders);
  setKpi("kpi-aov", money(k.average_order_value), k.average_order_value);
  setKpi("kpi-open-orders", count(k.open_orders), k.open_orders);

  const q = data.questions;
  columnChart($("daily-revenue"), records(q["daily-revenue"]), "day", "revenue", { title: "Daily revenue", shortLabel: (d) => d.slice(5) });
  columnChart($("revenue-by-hour"), records(q["revenue-by-hour"]), "hour", "revenue", { width: 420, height: 200, maxLabels: 12, title: "Revenue by hour" });
  lineChart($("average-order-value"), records(q["average-order-value"]), "day", "average_order_value");
  barList($("sales-by-category"), records(q["sales-by-category"]), "category", "revenue");
  barList($("top-products"), records(q["top-products"]), "product", "revenue");
  barList($("payment-methods"), records(q["payment-methods"]), "method", "amount");
  barList($("clickstream-funnel"), records(q["clickstream-funnel"]), "stage", "count");
  for (const name of ["busiest-days", "store-comparison", "sales-by-employee", "top-customers", "pending-items", "open-orders", "inventory-movement", "product-conversion"]) {
    table($(name), q[name], name === "open-orders" ? 20 : 50);
  }

  const select = $("store");
  if (!storesLoaded) {
    const current = data.store === null ? "" : String(data.store);
    clear(select);
    select.appendChild(htmlEl("option", { value: "" }, "All stores"));
    for (const s of data.stores) select.appendChild(htmlEl("option", { value: s.id }, s.name));
    select.value = current;
    storesLoaded = true;
  }
  if (!$("from").value) $("from").value = data.from;
  if (!$("to").value) $("to").value = data.to;
}

async function refresh() {
  clearTimeout(timer);
  const params = new URLSearchParams();
  for (const id of ["from", "to", "store"]) if ($(id).value) params.set(id, $(id).value);
  const mine = ++inFlight;
  try {
    const res = await fetch(`/api/summary?${params}`, { cache: "no-store" });
    if (res.status === 401) {
      // The session ended (expired, or its key revoked): sign in again, then come back here.
      location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
      return;
    }
    const data = await res.json();
    if (mine !== inFlight) return;
    if (!res.ok) throw new Error(data.error || res.statusText);
    render(data);
    $("status").className = "";
    $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    $("status").className = "error";
    $("status").textContent = `error: ${e.message}`;
  } finally {
    if (mine === inFlight) timer = setTimeout(refresh, REFRESH_MS);
  }
}

function start() {
  const url = new URLSearchParams(location.search);
  for (const id of ["from", "to"]) if (url.get(id)) $(id).value = url.get(id);
  if (url.get("store")) {
    $("store").appendChild(htmlEl("option", { value: url.get("store") }, `store ${url.get("store")}`));
    $("store").value = url.get("store");
  }
  $("filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams();
    for (const id of ["from", "to", "store"]) if ($(id).value) p.set(id, $(id).value);
    history.replaceState(null, "", `?${p}`);
    refresh();
  });
  refresh();
}

start();

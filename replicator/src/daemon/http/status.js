// The replicator status page (status.html): polls /status every 2 s; served as
// /assets/status.js (no inline script: the page's Content-Security-Policy forbids it).
"use strict";
const $ = (id) => document.getElementById(id);
const text = (id, v) => { $(id).textContent = (v === null || v === undefined || v === "") ? "–" : String(v); };
const bytes = (b) => {
  if (b === null || b === undefined) return null;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0, v = b;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v : v.toFixed(1)) + " " + units[i];
};
const seconds = (s) => s === null || s === undefined ? null : (s < 1 ? (s * 1000).toFixed(0) + " ms" : s.toFixed(2) + " s");

function chart(history) {
  const svg = $("chart");
  const W = 800, H = 180, pad = 6;
  const lags = history.map((p) => p.lag_seconds || 0);
  const rates = history.map((p) => p.changes_per_second || 0);
  const maxLag = Math.max(0.1, ...lags), maxRate = Math.max(1, ...rates);
  const x = (i) => history.length < 2 ? W : pad + (W - 2 * pad) * i / (history.length - 1);
  const line = (vals, max) => vals.map((v, i) => x(i).toFixed(1) + "," + (H - pad - (H - 2 * pad) * v / max).toFixed(1)).join(" ");
  svg.innerHTML =
    `<line class="axis" x1="0" y1="${H - pad}" x2="${W}" y2="${H - pad}"/>` +
    `<polyline class="rate" points="${line(rates, maxRate)}"/>` +
    `<polyline class="lag" id="lag-line" points="${line(lags, maxLag)}"/>`;
  $("chart-range").textContent = history.length
    ? `${history.length} samples, lag max ${seconds(maxLag)}, rate max ${maxRate.toFixed(0)} changes/s`
    : "no samples yet";
}

let lastPublished = null;

function renderNats(n) {
  $("nats").hidden = !n;
  if (!n) return;
  const now = Date.now();
  if (lastPublished && now > lastPublished.at) {
    const rate = (n.published - lastPublished.count) * 1000 / (now - lastPublished.at);
    text("nats-rate", rate.toFixed(1) + " msg/s");
  }
  lastPublished = { at: now, count: n.published };
  text("nats-stream", n.stream);
  text("nats-connected", n.connected ? "yes" : "no");
  $("nats-connected").className = n.connected ? "ok" : "bad";
  text("nats-published", n.published);
  text("nats-seq", n.stream_sequence);
  text("nats-unacked", `${n.unacknowledged_messages} messages, ${bytes(n.unacknowledged_bytes)}`);
  text("nats-ack", n.last_ack_ms === null || n.last_ack_ms === undefined ? null : n.last_ack_ms.toFixed(1) + " ms");
  text("nats-dups", n.duplicates);
  text("nats-consumers", (n.consumers || []).map((c) => `${c.name}: ${c.pending_messages} pending, ${c.ack_pending_messages} unacked`).join("; ") || null);
}

// What was done about a partition, as `brewlytics status` says it.
function partitionDone(p) {
  const work = (what) => p.backfill_id === null || p.backfill_id === undefined ? `rows ${what}`
    : p.backfill_state === "done" ? `rows ${what} (backfill ${p.backfill_id})`
    : `rows being ${what} (backfill ${p.backfill_id} ${p.backfill_state})`;
  switch (p.action) {
    case "copy": return work("copied");
    case "remove": return work("removed");
    case "keep": return "rows kept in the replica";
    case "created": return "created empty";
    case "baseline": return "there when the table was first copied";
    case "replaced": return "kept rows replaced by a partition of the same bound";
    case "still_published": return "still published as a table of its own";
    case "with_parent": return "with its parent";
    default: return p.action;
  }
}

function renderPartitions(list) {
  $("partitions").hidden = !list || list.length === 0;
  const body = $("partition-rows");
  body.replaceChildren();
  for (const p of list || []) {
    const tr = document.createElement("tr");
    for (const v of [p.table, p.partition, p.bound, p.state, partitionDone(p), p.changed_lsn]) {
      const td = document.createElement("td");
      td.textContent = v === null || v === undefined ? "–" : String(v);
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

// The journal: size, partitions, where replay can start, the latest compaction.
function renderJournal(j) {
  if (!j) return;
  text("journal-size", j.partitioned ? bytes(j.bytes) : "not partitioned: run brewlytics migrate");
  text("journal-partitions", j.partitioned ? `${j.partitions} (to ${j.partitions_end || "–"})` +
    (j.default_rows > 0 ? `, ${j.default_rows} rows in the default partition` : "") : null);
  $("journal-partitions").className = j.default_rows > 0 ? "warn" : "";
  text("journal-from", j.replayable_from ? j.replayable_from + (j.compacted ? "" : " (never compacted)") : null);
  text("journal-since", j.replayable_since);
  const c = j.last_compaction;
  text("journal-compaction", c ? `at ${c.cut} by ${c.trigger}, ${c.finished_at}: ${c.images} images, ` +
    `${c.dropped_partitions} partitions dropped (${bytes(c.dropped_bytes)}), ${c.seconds.toFixed(1)} s` : "never");
}

function render(doc) {
  const live = doc.replicator || {};
  const slot = live.slot || {};
  text("role", live.role);
  $("role").className = "role " + (live.role === "streaming" ? "ok" : "");
  const lag = live.lag_seconds;
  text("lag-seconds", seconds(lag));
  $("lag-seconds").className = "big " + (lag === null || lag === undefined ? "" : lag < 1 ? "ok" : lag < 10 ? "warn" : "bad");
  text("lag-bytes", bytes(slot.lag_bytes));
  text("retained", bytes(slot.retained_wal_bytes) + (live.retained_wal_warning ? " (over threshold)" : ""));
  $("retained").className = live.retained_wal_warning ? "warn" : "";
  text("wal-status", slot.exists === false ? "slot missing" : slot.wal_status);
  $("wal-status").className = slot.wal_status === "lost" ? "bad" : "";
  text("slot", doc.slot_name);
  text("active", doc.slot ? doc.slot.active : null);
  text("source-lsn", slot.source_wal_lsn || doc.source_wal_lsn);
  text("confirmed-lsn", slot.confirmed_flush_lsn);
  text("checkpoint", live.checkpoint_lsn || doc.checkpoint_lsn);
  text("last-commit", doc.last_applied_commit_ts);
  const hist = live.history || [];
  text("rate", hist.length ? hist[hist.length - 1].changes_per_second.toFixed(1) + " changes/s" : null);
  text("changes", live.changes_applied);
  text("transactions", live.transactions_applied);
  const b = live.last_batch;
  text("last-batch", b ? `${b.changes} changes, ${b.transactions} tx in ${b.milliseconds.toFixed(1)} ms` : null);
  const ip = live.in_progress;
  text("in-progress", ip ? (ip.receiving ? `${ip.open} open, ${bytes(ip.spool_bytes)} spooled`
    : "received after their commit") : null);
  text("dead-letters", doc.dead_letters !== undefined ? doc.dead_letters : live.dead_letters);
  const err = live.last_error;
  $("error").textContent = doc.error ? doc.error : err ? `${err.at} [${err.kind}] ${err.message}` : "none";
  $("error").className = doc.error || err ? "bad" : "legend";
  // Star columns whose source no longer feeds every row (one line each, as `status` says it).
  const degraded = (doc.star_degraded || []).map((d) => d.message + (d.at ? ` (${d.at})` : ""));
  $("star-degraded").textContent = degraded.length ? degraded.join("\n") : "none degraded";
  $("star-degraded").className = degraded.length ? "warn lines" : "legend";
  text("star-dead-letters", doc.star_dead_letters);
  renderNats(live.nats);
  renderPartitions(doc.partitions);
  renderJournal(doc.journal);
  chart(hist);
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

async function refresh() {
  try {
    const r = await fetch("status", { cache: "no-store" });
    if (r.status === 401) {
      // The session ended (expired, or its key revoked): sign in again.
      location.assign("/login?next=/");
      return;
    }
    render(await r.json());
  } catch (e) {
    $("error").textContent = "status unavailable: " + e;
  }
}
refresh();
setInterval(refresh, 2000);

/* The technician page: PIN login (with its own keypad for the touch screen), then the
   overview, voices with rollback / remove / test plays, volume, the log tail and the
   plays-per-day chart drawn as SVG.  Every POST carries the session's CSRF token. */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  let csrf = null;
  let lastStats = null;
  let refreshTimer = 0;

  function toast(message, error = false) {
    const el = $("toast");
    el.textContent = message;
    el.classList.toggle("error", error);
    el.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => (el.hidden = true), error ? 9000 : 5000);
  }

  async function api(method, path, body) {
    const options = { method, headers: {}, credentials: "same-origin", cache: "no-store" };
    if (method !== "GET") {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body ?? {});
      if (csrf) options.headers["X-CSRF-Token"] = csrf;
    }
    const response = await fetch(path, options);
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      /* not JSON */
    }
    if (response.status === 401 && !path.endsWith("/login")) {
      showLogin();
    }
    return { status: response.status, ok: response.ok, data: data || {}, headers: response.headers };
  }

  /* ----------------------------------------------------------------- login */

  function showLogin(message = "") {
    csrf = null;
    clearInterval(refreshTimer);
    $("dashboard").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("login-message").textContent = message;
    $("pin").value = "";
    $("pin").focus();
  }

  function showDashboard() {
    $("login").hidden = true;
    $("dashboard").hidden = false;
    $("logout").hidden = false;
    refreshAll();
    clearInterval(refreshTimer);
    refreshTimer = setInterval(refreshOverview, 5000);
  }

  async function login(event) {
    event.preventDefault();
    const pin = $("pin").value;
    if (!pin) return;
    const submit = $("login-submit");
    submit.disabled = true;
    try {
      const { ok, status, data, headers } = await api("POST", "/api/tech/login", { pin });
      if (ok) {
        csrf = data.csrf;
        showDashboard();
        return;
      }
      $("pin").value = "";
      let message = data.error || `login failed (${status})`;
      const wait = Number(headers.get("Retry-After") || 0);
      if (wait > 0) {
        message += ` · next try in ${wait} s`;
        submit.disabled = true;
        setTimeout(() => (submit.disabled = false), wait * 1000);
        $("login-message").textContent = message;
        return;
      }
      $("login-message").textContent = message;
    } catch (_) {
      $("login-message").textContent = "the kiosk daemon does not answer; try again";
    }
    submit.disabled = false;
  }

  function keypad(event) {
    const key = event.target.closest("button")?.dataset.key;
    if (!key) return;
    const pin = $("pin");
    if (key === "back") pin.value = pin.value.slice(0, -1);
    else if (pin.value.length < 12) pin.value += key;
  }

  /* -------------------------------------------------------------- overview */

  function facts(dl, pairs) {
    dl.replaceChildren();
    for (const [name, value] of pairs) {
      if (value === undefined) continue;
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value === null || value === "" ? "–" : String(value);
      dl.append(dt, dd);
    }
  }

  function pill(el, text, kind) {
    el.textContent = text;
    el.className = `pill ${kind}`;
  }

  function ago(seconds) {
    if (seconds == null) return "never";
    if (seconds < 90) return `${Math.round(seconds)} s ago`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    return `${(seconds / 3600).toFixed(1)} h ago`;
  }

  function when(ts) {
    return ts ? new Date(ts * 1000).toLocaleString() : "";
  }

  function renderHealth(h) {
    pill($("health-status"), h.status || "?", h.status === "ok" ? "ok" : "bad");
    $("health-summary").textContent = `up ${ago(h.uptime_s).replace(" ago", "")}`;
    const list = $("health-problems");
    list.replaceChildren(...(h.problems || []).map((p) => Object.assign(document.createElement("li"), { textContent: p })));
    facts($("health-facts"), [
      ["Backend", h.backend],
      ["Audio", h.audio?.output],
      ["Stats", h.stats ? (h.stats.ok ? `ok, ${h.stats.written} rows written` : h.stats.detail) : "off"],
      ["Watchdog", h.watchdog ? (h.watchdog.enabled ? `on, ${h.watchdog.pings} pings` : "off (not under systemd)") : undefined],
      ["Last press", h.last_press ? `${h.last_press.voice} ${h.last_press.item} (${h.last_press.source})` : "none"],
      ["Reloads", h.reloads],
      ["Config", h.config],
    ]);
  }

  function renderScreen(screen, restarts) {
    if (!screen) {
      pill($("screen-status"), "off", "warn");
      $("screen-summary").textContent = "the frozen-screen watch is not running";
      facts($("screen-facts"), []);
    } else {
      const kinds = { ok: "ok", waiting: "warn", stale: "bad", restarting: "warn", gave_up: "bad" };
      pill($("screen-status"), screen.state.replace("_", " "), kinds[screen.state] || "warn");
      $("screen-summary").textContent = `last heartbeat ${ago(screen.last_heartbeat_age_s)}`;
      facts($("screen-facts"), [
        ["Timeout", `${screen.timeout_s} s`],
        ["Restarts", `${screen.restarts} since start (${screen.restarts_in_a_row} in a row)`],
        ["Next restart", screen.next_restart_in_s == null ? "given up until the page beats" : screen.state === "ok" ? "–" : `in ${screen.next_restart_in_s} s`],
        ["Last restart", screen.last_restart ? `${screen.last_restart.at}: ${screen.last_restart.message}` : "none"],
        ["Command", (screen.command || []).join(" ")],
      ]);
    }
    const list = $("screen-restarts");
    list.replaceChildren(
      ...(restarts || []).slice(0, 8).map((e) =>
        Object.assign(document.createElement("li"), { textContent: `${when(e.ts)}: ${e.detail}` }),
      ),
    );
  }

  /* Text from a pack in its own language (a name, a recording's title). */
  const scriptLang = (value) => (/[\u3400-\u9fff]/.test(value || "") ? "zh-Hans" : "en");
  function span(text, className) {
    const el = document.createElement("span");
    if (className) el.className = className;
    el.lang = scriptLang(text);
    el.textContent = text;
    return el;
  }

  function voiceName(v) {
    const n = v.display_name || {};
    const el = document.createElement("span");
    el.className = "name";
    const parts = [n.zh, n.en].filter(Boolean);
    if (!parts.length) parts.push(v.id);
    parts.forEach((p, i) => {
      if (i) el.append(" · ");
      el.append(span(p));
    });
    return el;
  }

  function renderVoices(voices) {
    const body = $("voices-body");
    body.replaceChildren();
    if (!voices.length) {
      const row = body.insertRow();
      const cell = row.insertCell();
      cell.colSpan = 6;
      cell.textContent = "No voices installed. Provision packs from a USB stick (kiosk provision).";
      return;
    }
    for (const v of voices) {
      const row = body.insertRow();
      row.dataset.voice = v.id;
      const name = row.insertCell();
      name.append(voiceName(v));
      name.append(Object.assign(document.createElement("span"), { className: "sub", textContent: v.id }));
      row.insertCell().textContent = `v${v.version}` + (v.loaded_version && v.loaded_version !== v.version ? ` (playing v${v.loaded_version})` : "");
      row.cells[1].className = "active-version";
      row.insertCell().textContent = v.kept.length ? v.kept.map((k) => `v${k}`).join(", ") : "none";
      const consent = row.insertCell();
      consent.textContent = `${v.text_policy}, ${v.enabled ? "valid" : "ENDED"} until ${v.valid_until}`;
      const runtime = row.insertCell();
      runtime.textContent = v.backend || (v.loaded ? "loaded" : "not loaded");
      if (v.problems?.length) {
        runtime.append(Object.assign(document.createElement("span"), { className: "sub", textContent: v.problems.join("; ") }));
      }
      const actions = row.insertCell();
      const buttons = document.createElement("div");
      buttons.className = "actions";
      const older = v.kept.filter((k) => k < v.version);
      const rollback = button("Roll back", () => voiceAction("rollback", v.id), `Roll back ${v.id} to v${older.at(-1) ?? "?"}`);
      rollback.dataset.action = "rollback";
      rollback.disabled = !older.length;
      const remove = button("Remove", (b) => armRemove(b, v.id), `Remove ${v.id} and all its versions`);
      remove.classList.add("danger");
      remove.dataset.action = "remove";
      buttons.append(rollback, remove);
      actions.append(buttons);
      const tests = document.createElement("div");
      tests.className = "tests";
      for (const p of v.phrases || []) {
        const b = button(`▶ ${p.label_en || p.id}`, () => testPlay(v.id, { phrase: p.id }), `Test play ${v.id} phrase ${p.id}`);
        b.dataset.test = p.id;
        tests.append(b);
      }
      for (const a of v.archival || []) {
        const b = button("▶ ", () => testPlay(v.id, { archival: a.id }), `Test play ${v.id} recording ${a.title}`);
        b.append(span(a.title), " (original)");
        b.dataset.test = a.id;
        tests.append(b);
      }
      actions.append(tests);
    }
  }

  function button(label, onClick, aria) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    if (aria) b.setAttribute("aria-label", aria);
    b.addEventListener("click", () => onClick(b));
    return b;
  }

  function armRemove(b, id) {
    if (b.classList.contains("armed")) {
      voiceAction("remove", id);
      return;
    }
    b.classList.add("armed");
    b.textContent = `Tap again to remove ${id}`;
    setTimeout(() => {
      b.classList.remove("armed");
      b.textContent = "Remove";
    }, 5000);
  }

  async function voiceAction(action, id) {
    const body = action === "remove" ? { voice: id, confirm: id } : { voice: id };
    const { ok, data } = await api("POST", `/api/tech/${action}`, body);
    toast(ok ? data.message : data.error || `${action} failed`, !ok);
    setTimeout(refreshOverview, 800);
    setTimeout(refreshOverview, 3000);
  }

  async function testPlay(voice, what) {
    const { ok, data } = await api("POST", "/api/tech/test", { voice, ...what });
    toast(ok ? `playing (utterance ${data.utterance})` : data.error || "test play failed", !ok);
  }

  function renderSchedule(o) {
    const s = o.schedule || {};
    $("volume-value").textContent = o.volume == null ? "–" : Number(o.volume).toFixed(2);
    if (document.activeElement !== $("volume") && o.volume != null) $("volume").value = o.volume;
    facts($("schedule-facts"), [
      ["Now", o.open === false ? "closed" : "open"],
      ["Time zone", s.timezone],
      ["Opening hours", (s.open || []).map((p) => `${p.days} ${p.from}–${p.to}`).join("; ") || "always open"],
      ["Volume steps", (s.volume || []).map((v) => `${v.from} → ${v.volume}`).join("; ") || `${s.default_volume} all day`],
      ["Gain cap", s.gain_cap],
      ["Dim when closed", s.dim_when_closed ? "yes" : "no"],
    ]);
  }

  function renderReport(report) {
    $("report-time").textContent = report ? `written ${report.time ? new Date(report.time).toLocaleString() : ""}` : "no provisioning report yet";
    $("report-text").textContent = report ? report.text : "";
  }

  async function refreshOverview() {
    const { ok, data } = await api("GET", "/api/tech/overview");
    if (!ok) return;
    renderHealth(data.health || {});
    renderScreen(data.screen, data.browser_restarts);
    renderVoices(data.voices || []);
    renderSchedule(data);
    renderReport(data.report);
    document.body.dataset.loaded = "true";
  }

  /* ------------------------------------------------------------------- log */

  async function refreshLog() {
    const lines = $("log-lines").value;
    const { ok, data } = await api("GET", `/api/tech/log?lines=${encodeURIComponent(lines)}`);
    if (!ok) return;
    const pre = $("log-text");
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
    pre.textContent = (data.lines || []).join("\n") || "(no log lines yet)";
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  /* ----------------------------------------------------------------- chart */

  /* Colours with at least 3:1 contrast against white (WCAG non-text contrast). */
  const COLOURS = ["#7b2d1c", "#2f4b3f", "#1f4e8c", "#8a4b00", "#6a2c70", "#35631f", "#9c2a52", "#4a4a4a"];
  const SVG = "http://www.w3.org/2000/svg";

  function svgEl(name, attrs, text) {
    const el = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    if (text != null) el.textContent = text;
    return el;
  }

  function days(first, last) {
    const out = [];
    const d = new Date(`${first}T00:00:00`);
    const end = new Date(`${last}T00:00:00`);
    while (d <= end) {
      out.push(`${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`);
      d.setDate(d.getDate() + 1);
    }
    return out;
  }

  function drawChart(stats) {
    const holder = $("chart");
    const legend = $("chart-legend");
    holder.replaceChildren();
    legend.replaceChildren();
    const dayList = days(stats.first_day, stats.last_day);
    const series = [];
    const key = (r) => `${r.voice} · ${r.item}${r.kind === "archival" ? " (original)" : r.kind === "text" ? " (free text)" : ""}`;
    const table = new Map();
    for (const r of stats.plays_by_phrase || []) {
      const k = key(r);
      if (!series.includes(k)) series.push(k);
      table.set(`${r.day}|${k}`, (table.get(`${r.day}|${k}`) || 0) + r.plays);
    }
    const totals = dayList.map((d) => series.reduce((sum, k) => sum + (table.get(`${d}|${k}`) || 0), 0));
    const max = Math.max(1, ...totals);
    /* Drawn at the panel's own pixel size, so the labels stay at the page's text size. */
    const W = Math.max(320, Math.floor(holder.clientWidth || 900)), H = 240;
    const left = 44, right = 12, top = 16, bottom = 36;
    const svg = svgEl("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "presentation" });
    const plotW = W - left - right, plotH = H - top - bottom;
    const step = niceStep(max);
    for (let v = 0; v <= max; v += step) {
      const y = top + plotH - (v / max) * plotH;
      svg.append(svgEl("line", { x1: left, x2: W - right, y1: y, y2: y, class: "grid" }));
      svg.append(svgEl("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, v));
    }
    svg.append(svgEl("line", { x1: left, x2: W - right, y1: top + plotH, y2: top + plotH, class: "axis" }));
    const slot = plotW / dayList.length;
    const barW = Math.max(4, Math.min(48, slot * 0.7));
    dayList.forEach((d, i) => {
      let y = top + plotH;
      const x = left + i * slot + (slot - barW) / 2;
      series.forEach((k, s) => {
        const n = table.get(`${d}|${k}`) || 0;
        if (!n) return;
        const h = (n / max) * plotH;
        y -= h;
        const rect = svgEl("rect", { x, y, width: barW, height: h, fill: COLOURS[s % COLOURS.length] });
        rect.append(svgEl("title", {}, `${d} ${k}: ${n}`));
        svg.append(rect);
      });
      const every = Math.ceil(dayList.length / 14);
      if (i % every === 0) {
        svg.append(svgEl("text", { x: x + barW / 2, y: H - bottom + 16, "text-anchor": "middle" }, d.slice(5)));
      }
      if (totals[i]) svg.append(svgEl("text", { x: x + barW / 2, y: y - 4, "text-anchor": "middle" }, totals[i]));
    });
    if (!series.length) {
      svg.append(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "no plays in these days"));
    }
    holder.append(svg);
    holder.setAttribute("aria-label", `Plays per day, per phrase, ${stats.first_day} to ${stats.last_day}: ` +
      (series.length ? series.map((k) => `${k} ${dayList.reduce((s, d) => s + (table.get(`${d}|${k}`) || 0), 0)}`).join(", ") : "none"));
    series.forEach((k, s) => {
      const li = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = COLOURS[s % COLOURS.length];
      li.append(swatch, document.createTextNode(k));
      legend.append(li);
    });
    const lat = stats.latency || {};
    $("stats-summary").textContent = `${totals.reduce((a, b) => a + b, 0)} plays in ${dayList.length} days` +
      (lat.count ? ` · press-to-sound latency p50 ${Math.round(lat.p50_ms)} ms, p99 ${Math.round(lat.p99_ms)} ms` : "");
  }

  function niceStep(max) {
    const raw = max / 5;
    const power = 10 ** Math.floor(Math.log10(Math.max(1, raw)));
    for (const m of [1, 2, 5, 10]) if (raw <= m * power) return Math.max(1, m * power);
    return Math.max(1, 10 * power);
  }

  async function refreshStats() {
    const n = $("stats-days").value;
    $("csv-link").href = `/api/tech/stats.csv?days=${encodeURIComponent(n)}`;
    const { ok, data } = await api("GET", `/api/tech/stats?days=${encodeURIComponent(n)}`);
    if (ok) {
      lastStats = data;
      drawChart(data);
    }
    else $("stats-summary").textContent = data.error || "no stats";
  }

  function refreshAll() {
    refreshOverview();
    refreshLog();
    refreshStats();
  }

  /* ------------------------------------------------------------------ start */

  async function start() {
    $("login-form").addEventListener("submit", login);
    $("keypad").addEventListener("click", keypad);
    $("logout").addEventListener("click", async () => {
      await api("POST", "/api/tech/logout", {});
      showLogin("logged out");
    });
    $("restart-browser").addEventListener("click", async () => {
      const { ok, data } = await api("POST", "/api/tech/restart-browser", {});
      toast(ok ? `browser restart: ${data.message}` : data.error || "restart failed", !ok || data.returncode !== 0);
      setTimeout(refreshOverview, 500);
    });
    $("volume").addEventListener("input", () => ($("volume-value").textContent = Number($("volume").value).toFixed(2)));
    $("volume-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const { ok, data } = await api("POST", "/api/tech/volume", { volume: Number($("volume").value) });
      toast(ok ? `volume ${Number(data.volume).toFixed(2)}` : data.error || "could not set the volume", !ok);
      refreshOverview();
    });
    $("log-refresh").addEventListener("click", refreshLog);
    $("log-lines").addEventListener("change", refreshLog);
    $("stats-days").addEventListener("change", refreshStats);
    let resizeTimer = 0;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => lastStats && drawChart(lastStats), 150);
    });
    try {
      const { ok, data } = await api("GET", "/api/tech/session");
      if (ok) {
        csrf = data.csrf;
        showDashboard();
      } else {
        showLogin();
      }
    } catch (_) {
      showLogin("the kiosk daemon does not answer; reload the page");
    }
  }

  start();
})();

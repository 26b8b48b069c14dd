/* The visitor screen: voices from /api/voices, plays through /api/play and /api/say,
   what the speaker does from the /api/events stream (reconnected with back-off,
   /api/state read after each reconnect), a heartbeat for the frozen-screen watch,
   and the attract screen after [ui] idle_seconds without a touch. */
"use strict";

(() => {
  const body = document.body;
  const IDLE_MS = Math.max(5, Number(body.dataset.idleSeconds) || 90) * 1000;
  const HEARTBEAT_MS = Math.max(1, Number(body.dataset.heartbeatSeconds) || 5) * 1000;
  let maxChars = Number(body.dataset.maxChars) || 60;

  const LANG_TAG = { zh: "zh-Hans", en: "en" };
  /* Every visitor-facing string, [Chinese, English]. */
  const T = {
    phrases: ["用 TA 的声音说（AI 生成）", "In their voice (AI-generated)"],
    archival: ["原声录音 · 本人的声音", "Original recordings · their own voice"],
    original: ["原声", "Original recording"],
    aiVoice: ["AI 生成的声音 · 经家属同意", "AI-generated voice · with the family's consent"],
    originalVoice: ["原声录音 · 本人的声音", "Original recording · their own voice"],
    freeTitle: ["请 TA 说一句话", "Ask for your own words"],
    freeLabel: ["写下一句话（最多 {n} 个字）", "Type a sentence (at most {n} characters)"],
    speak: ["朗读", "Speak"],
    stop: ["停止", "Stop"],
    nowPlaying: ["正在播放", "Now playing"],
    preparing: ["正在生成声音…", "Preparing the voice…"],
    refused: ["这句话不能朗读，请换一句。", "This text can't be spoken. Please try other words."],
    tooLong: ["太长了：最多 {n} 个字。", "Too long: at most {n} characters."],
    curatedOnly: ["这位长者的声音只说选定的语句。", "This voice only says its chosen phrases."],
    busy: ["请稍候再试。", "Please try again in a moment."],
    failed: ["暂时无法播放，请稍候再试。", "Cannot play right now. Please try again soon."],
    reconnecting: ["正在重新连接…", "Reconnecting…"],
    closed: ["展览现已关闭。", "The exhibit is closed now."],
    noVoices: ["暂时没有可以聆听的声音。", "No voices to listen to yet."],
    voices: ["声音", "Voices"],
  };

  let lang = "zh";
  let voices = [];
  let currentId = null;
  let playing = null; /* the last synthesizing / playing event, or null */
  let progress = { position: 0, at: 0, seconds: null, running: false };
  let hideTimer = 0;
  let lastTouch = Date.now();
  let attractTimer = 0;
  let frames = 0;
  let freeDraft = "";

  /* The longest wait between reconnection tries (the daemon restarts in well under a minute). */
  const MAX_RETRY_MS = 10000;
  /* How long the finished state stays on screen before the bar goes. */
  const FINISHED_MS = 1500;

  const $ = (id) => document.getElementById(id);
  /* Text from a pack (a recording's title, a visitor's words) gets the lang of its script. */
  const scriptLang = (value) => (/[\u3400-\u9fff\uf900-\ufaff]/.test(value || "") ? "zh-Hans" : "en");
  const other = (l) => (l === "zh" ? "en" : "zh");
  const text = (key, l = lang, vars = {}) =>
    T[key][l === "zh" ? 0 : 1].replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ""));

  /* Fill `el` with both languages: the chosen one first (larger), the other below. */
  function bilingual(el, zh, en) {
    el.replaceChildren();
    const parts = lang === "zh" ? [["zh", zh], ["en", en]] : [["en", en], ["zh", zh]];
    let first = true;
    for (const [l, value] of parts) {
      if (!value) continue;
      const span = document.createElement("span");
      span.className = first ? "primary" : "secondary";
      span.lang = LANG_TAG[l];
      span.textContent = value;
      el.append(span);
      first = false;
    }
  }
  const bilingualKey = (el, key, vars) => bilingual(el, text(key, "zh", vars), text(key, "en", vars));

  /* Both languages in one run of text ("原声 · Original recording"), the chosen one first. */
  function bilingualInline(el, key, vars = {}) {
    el.replaceChildren();
    [lang, other(lang)].forEach((l, i) => {
      if (i) el.append(" · ");
      const span = document.createElement("span");
      span.lang = LANG_TAG[l];
      span.textContent = text(key, l, vars);
      el.append(span);
    });
  }

  /* One language only, with its lang attribute (falls back to the other one). */
  function oneLanguage(el, zh, en) {
    const [l, value] = lang === "zh" ? (zh ? ["zh", zh] : ["en", en]) : en ? ["en", en] : ["zh", zh];
    el.lang = LANG_TAG[l];
    el.textContent = value || "";
  }

  async function postJSON(url, data) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(data),
    });
    let reply = {};
    try {
      reply = await response.json();
    } catch (_) {
      /* 204 or not JSON */
    }
    return { status: response.status, ok: response.ok, reply };
  }

  /* ------------------------------------------------------------- notices */

  const notices = new Map(); /* key -> [zhText, enText] */
  function setNotice(key, on, keyText = key) {
    if (on) notices.set(key, [text(keyText, "zh"), text(keyText, "en")]);
    else notices.delete(key);
    renderNotice();
  }
  function renderNotice() {
    const el = $("notice");
    const first = [...notices.values()][0];
    el.hidden = !first;
    if (first) bilingual(el, first[0], first[1]);
  }
  let flashTimer = 0;
  function flash(key) {
    setNotice("flash", true, key);
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => setNotice("flash", false), 6000);
  }

  /* -------------------------------------------------------------- voices */

  const currentVoice = () => voices.find((v) => v.id === currentId) || voices[0] || null;

  function voiceName(v, l = lang) {
    const bio = v.bio || {};
    return (l === "zh" ? bio.name_zh || v.display_name?.zh : bio.name_en || v.display_name?.en) ||
      v.display_name?.zh || v.display_name?.en || v.id;
  }

  function formatSeconds(s) {
    if (s == null || !isFinite(s)) return "";
    const total = Math.round(s);
    return `${Math.floor(total / 60)}:${String(total % 60).padStart(2, "0")}`;
  }

  function renderTabs() {
    const nav = $("voice-tabs");
    nav.setAttribute("aria-label", `${text("voices", "zh")} / ${text("voices", "en")}`);
    nav.replaceChildren();
    nav.hidden = voices.length < 2;
    const current = currentVoice();
    for (const v of voices) {
      const tab = document.createElement("button");
      tab.type = "button";
      tab.className = "voice-tab";
      tab.dataset.voice = v.id;
      tab.setAttribute("aria-current", String(v === current));
      if (v.portrait) {
        const img = document.createElement("img");
        img.src = v.portrait;
        img.alt = "";
        img.draggable = false;
        tab.append(img);
      } else {
        tab.append(iconEl("i-person"));
      }
      const label = document.createElement("span");
      oneLanguage(label, voiceName(v, "zh"), voiceName(v, "en"));
      tab.append(label);
      tab.addEventListener("click", () => {
        currentId = v.id;
        render();
      });
      nav.append(tab);
    }
  }

  function iconEl(name) {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "icon");
    svg.setAttribute("aria-hidden", "true");
    const use = document.createElementNS("http://www.w3.org/2000/svg", "use");
    use.setAttribute("href", `#${name}`);
    svg.append(use);
    return svg;
  }

  function renderCard(v) {
    const card = $("t-voice").content.firstElementChild.cloneNode(true);
    card.dataset.voice = v.id;
    const bio = v.bio || {};
    const img = card.querySelector(".portrait img");
    if (v.portrait) {
      img.src = v.portrait;
      img.alt = `${voiceName(v, "zh")} · ${voiceName(v, "en")}`;
    }
    const name = card.querySelector(".name");
    bilingual(name, voiceName(v, "zh"), voiceName(v, "en"));
    card.setAttribute("aria-label", `${voiceName(v, "zh")} · ${voiceName(v, "en")}`);
    const dates = card.querySelector(".dates");
    dates.textContent = bio.dates || "";
    dates.hidden = !bio.dates;
    const bioEl = card.querySelector(".bio");
    oneLanguage(bioEl, bio.bio_zh, bio.bio_en);
    bioEl.hidden = !(bio.bio_zh || bio.bio_en);

    const phrases = card.querySelector(".phrases");
    const phraseSection = card.querySelector(".phrases-section");
    phraseSection.hidden = !v.phrases?.length;
    bilingualKey(card.querySelector(".phrases-title"), "phrases");
    for (const p of v.phrases || []) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "phrase";
      button.dataset.phrase = p.id;
      button.append(iconEl("i-play"));
      const label = document.createElement("span");
      label.className = "label";
      bilingual(label, p.label_zh, p.label_en);
      button.append(label);
      button.addEventListener("click", () => play(button, { voice: v.id, phrase: p.id }));
      phrases.append(button);
    }

    const archivalSection = card.querySelector(".archival-section");
    archivalSection.hidden = !v.archival?.length;
    bilingualKey(card.querySelector(".archival-title span"), "archival");
    const archival = card.querySelector(".archival");
    for (const a of v.archival || []) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "archival-item";
      button.dataset.archival = a.id;
      button.append(iconEl("i-archive"));
      const label = document.createElement("span");
      label.className = "label";
      const title = document.createElement("span");
      title.className = "archival-name";
      title.lang = scriptLang(a.title);
      title.textContent = a.title;
      const length = formatSeconds(a.seconds);
      if (length) {
        const span = document.createElement("span");
        span.className = "length";
        span.textContent = length;
        title.append(span);
      }
      const badge = document.createElement("span");
      badge.className = "badge";
      bilingualInline(badge, "original");
      label.append(title, badge);
      button.append(label);
      button.addEventListener("click", () => play(button, { voice: v.id, archival: a.id }));
      archival.append(button);
    }

    const free = card.querySelector(".free-section");
    free.hidden = !v.free_text;
    if (v.free_text) setUpFreeText(card, v);
    return card;
  }

  function setUpFreeText(card, v) {
    bilingualKey(card.querySelector(".free-title"), "freeTitle");
    const form = card.querySelector(".free-form");
    const input = card.querySelector(".free-input");
    const label = card.querySelector(".free-label");
    const count = card.querySelector(".free-count");
    const message = card.querySelector(".free-message");
    const speak = card.querySelector(".speak");
    const id = `free-${v.id}`;
    input.id = id;
    label.htmlFor = id;
    label.lang = LANG_TAG[lang];
    label.textContent = text("freeLabel", lang, { n: maxChars });
    input.maxLength = maxChars;
    input.lang = LANG_TAG[lang];
    input.value = freeDraft;
    bilingualKey(speak.querySelector("span"), "speak");
    const update = () => {
      freeDraft = input.value;
      const n = [...input.value].length;
      count.textContent = `${n} / ${maxChars}`;
      speak.disabled = n === 0 || n > maxChars;
    };
    input.addEventListener("focus", () => form.scrollIntoView({ block: "end", behavior: "instant" }));
    input.addEventListener("input", () => {
      message.textContent = "";
      update();
    });
    update();
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      if ([...value].length > maxChars) {
        showMessage(message, "tooLong");
        return;
      }
      speak.disabled = true;
      try {
        const { status, ok, reply } = await postJSON("/api/say", { voice: v.id, text: value });
        if (ok) {
          message.textContent = "";
          input.value = "";
          freeDraft = "";
        } else if (status === 400 || status === 413 || status === 422) {
          showMessage(message, "refused", reply.error);
        } else if (status === 403) {
          showMessage(message, "curatedOnly");
        } else if (status === 429 || status === 503 || status === 409) {
          showMessage(message, "busy");
        } else {
          showMessage(message, "failed");
        }
      } catch (_) {
        showMessage(message, "failed");
      } finally {
        update();
      }
    });
  }

  function showMessage(el, key, detail) {
    bilingualInline(el, key, { n: maxChars });
    el.title = detail || "";
    el.dataset.key = key;
    el.closest(".free-form")?.scrollIntoView({ block: "end", behavior: "instant" });
  }

  function render() {
    const main = $("voices");
    const scrolls = [...main.querySelectorAll(".card-actions")].map((e) => e.scrollTop);
    main.replaceChildren();
    renderTabs();
    const v = currentVoice();
    if (!v) {
      const p = document.createElement("p");
      p.className = "loading";
      bilingualKey(p, "noVoices");
      main.append(p);
    } else {
      currentId = v.id;
      main.append(renderCard(v));
      const actions = main.querySelector(".card-actions");
      if (actions && scrolls.length) actions.scrollTop = scrolls[0];
    }
    markPlaying();
    renderNowPlaying();
    renderNotice();
  }

  let voicesRetry = 1000;
  async function loadVoices() {
    try {
      const response = await fetch("/api/voices", { cache: "no-store" });
      if (!response.ok) throw new Error(String(response.status));
      const data = await response.json();
      voices = (data.voices || []).filter((v) => v.enabled !== false);
      if (data.free_text?.max_chars) maxChars = data.free_text.max_chars;
      voicesRetry = 1000;
      body.dataset.ready = "true";
      render();
    } catch (_) {
      setTimeout(loadVoices, voicesRetry);
      voicesRetry = Math.min(voicesRetry * 2, MAX_RETRY_MS);
    }
  }

  /* ------------------------------------------------------------ playing */

  async function play(button, data) {
    lastTouch = Date.now();
    button.setAttribute("aria-busy", "true");
    setTimeout(() => button.removeAttribute("aria-busy"), 8000);
    try {
      const { ok, status } = await postJSON("/api/play", data);
      if (!ok) {
        button.removeAttribute("aria-busy");
        flash(status === 429 || status === 409 || status === 503 ? "busy" : "failed");
      }
    } catch (_) {
      button.removeAttribute("aria-busy");
      flash("failed");
    }
  }

  function onPlayer(name, data) {
    if (!data) return;
    if (name === "finished") {
      if (playing && data.utterance !== playing.utterance) return;
      progress.running = false;
      clearTimeout(hideTimer);
      if (playing) {
        playing.state = "finished";
        progress.position = progress.seconds || 0;
      }
      hideTimer = setTimeout(() => {
        playing = null;
        markPlaying();
        renderNowPlaying();
      }, FINISHED_MS);
      return;
    }
    clearTimeout(hideTimer);
    if (name === "progress" && playing && data.utterance === playing.utterance) {
      progress = { position: data.position || 0, at: performance.now(), seconds: data.seconds ?? progress.seconds, running: true };
      playing = { ...playing, ...data, state: "playing" };
      renderNowPlaying(false);
      return;
    }
    playing = { ...(playing && playing.utterance === data.utterance ? playing : {}), ...data };
    playing.state = name === "synthesizing" ? "synthesizing" : "playing";
    progress = {
      position: data.position || 0,
      at: performance.now(),
      seconds: data.seconds ?? null,
      running: playing.state === "playing",
    };
    document.querySelectorAll("[aria-busy]").forEach((b) => b.removeAttribute("aria-busy"));
    markPlaying();
    renderNowPlaying();
  }

  function markPlaying() {
    document.querySelectorAll(".playing").forEach((b) => b.classList.remove("playing"));
    if (!playing) return;
    const card = document.querySelector(`.voice-card[data-voice="${CSS.escape(playing.voice || "")}"]`);
    if (!card) return;
    const selector = playing.phrase
      ? `.phrase[data-phrase="${CSS.escape(playing.phrase)}"]`
      : playing.archival
        ? `.archival-item[data-archival="${CSS.escape(playing.archival)}"]`
        : null;
    if (selector) card.querySelector(selector)?.classList.add("playing");
  }

  function renderNowPlaying(full = true) {
    const bar = $("now-playing");
    bar.hidden = !playing;
    if (!playing) return;
    if (full) {
      const voice = voices.find((v) => v.id === playing.voice);
      const archival = playing.kind === "archival";
      const banner = $("np-banner");
      banner.className = `np-banner ${archival ? "original" : "ai"}`;
      banner.replaceChildren(iconEl(archival ? "i-archive" : "i-spark"));
      const words = document.createElement("div");
      const headline = document.createElement("strong");
      bilingualKey(headline, archival ? "originalVoice" : "aiVoice");
      words.append(headline);
      if (!archival) {
        const disclosure = playing.disclosure || voice?.disclosure || null;
        if (disclosure) {
          const d = document.createElement("span");
          d.className = "disclosure";
          oneLanguage(d, disclosure.zh, disclosure.en);
          words.append(d);
        }
      }
      banner.append(words);
      banner.dataset.kind = archival ? "archival" : "synthetic";

      const state = $("np-state");
      const name = voice ? voiceName(voice) : "";
      state.lang = LANG_TAG[lang];
      state.textContent = `${text(playing.state === "synthesizing" ? "preparing" : "nowPlaying")}` +
        (name ? ` · ${name}` : "");
      const label = $("np-label");
      if (playing.phrase) {
        const phrase = voice?.phrases?.find((p) => p.id === playing.phrase);
        oneLanguage(label, playing.label_zh || phrase?.label_zh, playing.label_en || phrase?.label_en);
      } else if (playing.archival) {
        const item = voice?.archival?.find((a) => a.id === playing.archival);
        label.textContent = playing.title || item?.title || playing.archival;
        label.lang = scriptLang(label.textContent);
      } else {
        label.textContent = playing.text ? `“${playing.text}”` : "";
        label.lang = scriptLang(playing.text);
      }
      bilingualKey($("stop-label"), "stop");
      $("stop").setAttribute("aria-label", `${text("stop", "zh")} / ${text("stop", "en")}`);
    }
    const indeterminate = playing.state === "synthesizing" || !progress.seconds;
    $("np-progress").classList.toggle("indeterminate", indeterminate);
  }

  function drawProgress() {
    frames += 1;
    if (playing && progress.seconds) {
      const elapsed = progress.running ? (performance.now() - progress.at) / 1000 : 0;
      const fraction = Math.max(0, Math.min(1, (progress.position + elapsed) / progress.seconds));
      $("np-bar").style.transform = `scaleX(${fraction})`;
      $("np-progress").setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
    }
    requestAnimationFrame(drawProgress);
  }

  /* --------------------------------------------------- state and events */

  async function refreshState() {
    try {
      const response = await fetch("/api/state", { cache: "no-store" });
      if (!response.ok) return;
      const state = await response.json();
      setNotice("closed", state.open === false);
      if (state.playing) {
        onPlayer(state.playing.state === "synthesizing" ? "synthesizing" : "playing", state.playing);
      } else if (playing) {
        playing = null;
        markPlaying();
        renderNowPlaying();
      }
    } catch (_) {
      /* the stream's reconnect will try again */
    }
  }

  let source = null;
  let retry = 1000;
  let offlineTimer = 0;
  let everOpen = false;
  function connect() {
    source = new EventSource("/api/events");
    source.addEventListener("open", () => {
      retry = 1000;
      clearTimeout(offlineTimer);
      setNotice("offline", false);
      body.dataset.connected = "true";
      if (everOpen) loadVoices();
      everOpen = true;
      refreshState();
    });
    source.addEventListener("error", () => {
      source.close();
      body.dataset.connected = "false";
      clearTimeout(offlineTimer);
      offlineTimer = setTimeout(() => setNotice("offline", true, "reconnecting"), 3000);
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, MAX_RETRY_MS);
    });
    for (const name of ["synthesizing", "playing", "progress", "finished"]) {
      source.addEventListener(name, (event) => onPlayer(name, JSON.parse(event.data)));
    }
    source.addEventListener("voices", () => loadVoices());
    source.addEventListener("status", () => refreshState());
  }

  /* ------------------------------------------------ heartbeat and idle */

  let lastFrames = -1;
  function heartbeat() {
    /* Only a page whose frames are drawn and whose content is built says it is alive. */
    if (frames === lastFrames || body.dataset.ready !== "true") return;
    lastFrames = frames;
    fetch("/api/heartbeat", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ page: "visitor" }),
    }).catch(() => {});
  }

  function showAttract() {
    const overlay = $("attract");
    if (!overlay.hidden) return;
    document.activeElement?.blur?.();
    lang = "zh";
    currentId = voices[0]?.id ?? null;
    freeDraft = "";
    applyLanguage();
    const holder = $("attract-portraits");
    holder.replaceChildren();
    for (const v of voices.slice(0, 4)) {
      const figure = document.createElement("figure");
      figure.className = "attract-person";
      if (v.portrait) {
        const img = document.createElement("img");
        img.src = v.portrait;
        img.alt = "";
        img.draggable = false;
        figure.append(img);
      } else {
        figure.append(iconEl("i-person"));
      }
      const caption = document.createElement("figcaption");
      bilingual(caption, voiceName(v, "zh"), voiceName(v, "en"));
      figure.append(caption);
      holder.append(figure);
    }
    let lit = 0;
    const people = [...holder.children];
    const light = () => {
      people.forEach((p, i) => p.classList.toggle("lit", i === lit % people.length));
      lit += 1;
    };
    if (people.length) light();
    clearInterval(attractTimer);
    attractTimer = setInterval(light, 5000);
    overlay.hidden = false;
    body.dataset.attract = "true";
  }

  function hideAttract() {
    $("attract").hidden = true;
    clearInterval(attractTimer);
    body.dataset.attract = "false";
  }

  function touched() {
    lastTouch = Date.now();
  }

  function checkIdle() {
    if (!playing && Date.now() - lastTouch > IDLE_MS) showAttract();
  }

  /* ----------------------------------------------------------- language */

  function applyLanguage() {
    document.documentElement.lang = LANG_TAG[lang];
    for (const button of document.querySelectorAll(".lang")) {
      button.setAttribute("aria-pressed", String(button.dataset.lang === lang));
    }
    const title = $("title");
    bilingual(title, "聆听长者的声音", "Listen to our elders");
    render();
  }

  /* -------------------------------------------------------------- guards */

  function guardKiosk() {
    document.addEventListener("contextmenu", (e) => e.preventDefault());
    document.addEventListener("selectstart", (e) => {
      if (!(e.target instanceof Element && e.target.closest("textarea, input"))) e.preventDefault();
    });
    document.addEventListener("dragstart", (e) => e.preventDefault());
    document.addEventListener("gesturestart", (e) => e.preventDefault());
    document.addEventListener("wheel", (e) => e.ctrlKey && e.preventDefault(), { passive: false });
    document.addEventListener(
      "touchmove",
      (e) => e.touches.length > 1 && e.preventDefault(),
      { passive: false },
    );
    document.addEventListener("keydown", (e) => {
      if ((e.ctrlKey || e.metaKey) && ["+", "-", "=", "0", "p", "s", "o"].includes(e.key)) {
        e.preventDefault();
      }
    });
  }

  function start() {
    guardKiosk();
    for (const type of ["pointerdown", "keydown", "touchstart"]) {
      document.addEventListener(type, touched, { passive: true, capture: true });
    }
    $("attract").addEventListener("pointerdown", (e) => {
      e.preventDefault();
      e.stopPropagation();
      touched();
      hideAttract();
    });
    $("attract").addEventListener("click", (e) => {
      e.preventDefault();
      hideAttract();
    });
    for (const button of document.querySelectorAll(".lang")) {
      button.addEventListener("click", () => {
        lang = button.dataset.lang;
        applyLanguage();
      });
    }
    $("stop").addEventListener("click", async () => {
      try {
        await postJSON("/api/stop", {});
      } catch (_) {
        flash("failed");
      }
    });
    requestAnimationFrame(drawProgress);
    setInterval(heartbeat, HEARTBEAT_MS);
    setInterval(checkIdle, 1000);
    loadVoices();
    connect();
  }

  start();
})();

/* Runs in the page (tests/test_ui_browser.py): returns a list of problems with
   `lang` attributes, control names and WCAG AA text contrast (WCAG 2.x relative
   luminance; 4.5:1, or 3:1 for text of 24 px, or 18.66 px bold, and up). */
() => {
  const problems = [];
  const visible = (el) => {
    for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (s.display === "none" || s.visibility === "hidden" || e.hidden) return false;
    }
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  };
  const parse = (c) => {
    const m = c.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const over = (top, bottom) => ({
    r: top.r * top.a + bottom.r * (1 - top.a),
    g: top.g * top.a + bottom.g * (1 - top.a),
    b: top.b * top.a + bottom.b * (1 - top.a),
    a: 1,
  });
  const luminance = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const background = (el) => {
    const layers = [];
    let opacity = 1;
    for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
      const s = getComputedStyle(e);
      opacity *= Number(s.opacity);
      if (s.backgroundImage !== "none") return { image: true };
      const c = parse(s.backgroundColor);
      if (c && c.a > 0) layers.push(c);
      if (c && c.a === 1) break;
    }
    let bg = { r: 255, g: 255, b: 255, a: 1 };
    for (const layer of layers.reverse()) bg = over(layer, bg);
    return { bg, opacity };
  };
  const name = (el) => {
    const label = el.getAttribute("aria-label");
    if (label && label.trim()) return label.trim();
    const by = el.getAttribute("aria-labelledby");
    if (by) return by.split(/\s+/).map((id) => document.getElementById(id)?.textContent || "").join(" ").trim();
    if (el.labels && el.labels.length) return [...el.labels].map((l) => l.textContent).join(" ").trim();
    if (el.tagName === "SELECT") return "";
    return (el.textContent || el.value || "").trim();
  };
  for (const el of document.querySelectorAll("button, a[href], input, select, textarea, [role=button]")) {
    if (!visible(el)) continue;
    if (!name(el)) problems.push(`no accessible name: ${el.outerHTML.slice(0, 120)}`);
  }
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const text = node.textContent.trim();
    const el = node.parentElement;
    if (!text || !el || el.closest("template, script, style, title") || seen.has(el)) continue;
    if (!visible(el)) continue;
    seen.add(el);
    const lang = el.closest("[lang]")?.getAttribute("lang") || "";
    // Mostly Chinese text must be marked zh, English text en; a machine line (a log, a
    // report) that is mostly English with a Chinese name in it may be either.
    const cjk = (text.match(/[\u3400-\u9fff]/g) || []).length;
    const latin = (text.match(/[A-Za-z]/g) || []).length;
    if (cjk && cjk * 2 >= latin && !lang.startsWith("zh")) {
      problems.push(`Chinese text without lang=zh: "${text}" (lang=${lang})`);
    }
    if (!cjk && latin >= 3 && !lang.startsWith("en")) {
      problems.push(`English text without lang=en: "${text}" (lang=${lang})`);
    }
    if (cjk && cjk * 2 < latin && !/^(en|zh)/.test(lang)) {
      problems.push(`mixed text without lang: "${text}" (lang=${lang})`);
    }
    const s = getComputedStyle(el);
    const fg = parse(el instanceof SVGElement ? s.fill : s.color);
    const b = background(el);
    if (b.image) { problems.push(`text over an image or gradient, not checked: "${text}"`); continue; }
    if (!fg) continue;
    const shown = over({ ...fg, a: fg.a * b.opacity }, b.bg);
    const [l1, l2] = [luminance(shown), luminance(b.bg)].sort((x, y) => y - x);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    const size = parseFloat(s.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(s.fontWeight) >= 700);
    const need = large ? 3 : 4.5;
    if (ratio < need) problems.push(`contrast ${ratio.toFixed(2)} < ${need}: "${text.slice(0, 40)}" ${s.color} on rgb(${Math.round(b.bg.r)},${Math.round(b.bg.g)},${Math.round(b.bg.b)})`);
  }
  if (!document.documentElement.lang) problems.push("<html> has no lang");
  return problems;
}

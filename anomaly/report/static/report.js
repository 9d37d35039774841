// The report's enhancements where scripts run: paging, sorting, filters, the detail view
// and the review. Names from files are only ever set as text (textContent, attribute
// values), never parsed as markup.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var rows = data.rows;
  rows.forEach(function (r, i) { r.i = i; });
  var storeKey = "anomaly-review:" + data.id;
  var reviews = loadReviews();
  var state = { key: "score", dir: -1, page: 0, verdict: "", folder: "", text: "", review: "" };
  var view = rows.slice();
  var detailAt = -1;
  var $ = function (id) { return document.getElementById(id); };
  var tbody = document.querySelector("#rows tbody");
  var DECISIONS = { defect_confirmed: "defect confirmed", false_alarm: "false alarm", unsure: "unsure" };

  function loadReviews() {
    try { return JSON.parse(window.localStorage.getItem(storeKey) || "{}") || {}; }
    catch (e) { return {}; }
  }
  function saveReviews() {
    try { window.localStorage.setItem(storeKey, JSON.stringify(reviews)); } catch (e) { /* storage off: kept for this visit */ }
    updateReviewCount();
  }
  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "\u2013";
    return Number(v).toPrecision(4).replace(/\.?0+(e|$)/, "$1");
  }
  function sortValue(r, key) {
    if (key === "verdict") return r.defect;
    if (key === "p_value") return r.p === null ? Infinity : r.p;
    if (key === "n_regions") return r.nr === null ? -1 : r.nr;
    if (key === "largest_area") return r.la === null ? -1 : r.la;
    if (key === "review") return (reviews[r.path] || {}).decision || "";
    if (key === "cls") return r.cls;
    if (key === "path") return r.path;
    return r.score;
  }
  function applyView() {
    var text = state.text.toLowerCase();
    view = rows.filter(function (r) {
      if (state.verdict && (state.verdict === "defect") !== (r.defect === 1)) return false;
      if (state.folder && r.folder !== state.folder) return false;
      if (text && r.path.toLowerCase().indexOf(text) < 0) return false;
      if (state.review) {
        var d = (reviews[r.path] || {}).decision || "none";
        if (d !== state.review) return false;
      }
      return true;
    });
    var key = state.key, dir = state.dir;
    view.sort(function (a, b) {
      var x = sortValue(a, key), y = sortValue(b, key);
      if (x < y) return -dir;
      if (x > y) return dir;
      return a.i - b.i;
    });
    var pages = Math.max(1, Math.ceil(view.length / data.pageRows));
    if (state.page >= pages) state.page = pages - 1;
    renderPage();
  }
  function renderPage() {
    var start = state.page * data.pageRows;
    var slice = view.slice(start, start + data.pageRows);
    var fragment = document.createDocumentFragment();
    slice.forEach(function (r, k) { fragment.appendChild(rowNode(r, start + k)); });
    tbody.replaceChildren(fragment);
    var pages = Math.max(1, Math.ceil(view.length / data.pageRows));
    $("page-info").textContent = view.length
      ? "rows " + (start + 1) + "\u2013" + (start + slice.length) + " of " + view.length +
        " (page " + (state.page + 1) + " of " + pages + ")"
      : "no image matches";
    $("prev-page").disabled = state.page === 0;
    $("next-page").disabled = state.page >= pages - 1;
    $("table-note").textContent = view.length + " of " + rows.length + " images shown by the filters.";
    document.querySelectorAll("#rows th[data-key]").forEach(function (th) {
      th.classList.toggle("sorted-asc", th.dataset.key === state.key && state.dir === 1);
      th.classList.toggle("sorted-desc", th.dataset.key === state.key && state.dir === -1);
    });
  }
  function rowNode(r, position) {
    var tr = el("tr", null, "clickable");
    tr.tabIndex = 0;
    tr.dataset.position = position;
    var thumb = el("td");
    if (r.thumb && r.thumb.indexOf("data:image/") === 0) {
      var img = el("img");
      img.setAttribute("src", r.thumb);
      img.setAttribute("alt", "");
      img.setAttribute("loading", "lazy");
      thumb.appendChild(img);
    }
    tr.appendChild(thumb);
    var path = el("td"); path.appendChild(el("code", r.path)); tr.appendChild(path);
    tr.appendChild(el("td", fmt(r.score)));
    tr.appendChild(el("td", fmt(r.p)));
    var verdict = el("td"); verdict.appendChild(el("span", r.defect ? "defect" : "good", "verdict " + (r.defect ? "defect" : "good")));
    tr.appendChild(verdict);
    tr.appendChild(el("td", r.nr === null ? "\u2013" : r.nr));
    tr.appendChild(el("td", r.la === null ? "\u2013" : r.la));
    if (data.labels) tr.appendChild(el("td", r.cls));
    var review = reviews[r.path] || {};
    var mark = el("td", review.decision ? DECISIONS[review.decision] : "", "mark " + (review.decision || ""));
    if (review.note) mark.title = review.note;
    tr.appendChild(mark);
    return tr;
  }
  function openDetail(position) {
    if (position < 0 || position >= view.length) return;
    detailAt = position;
    var r = view[position];
    var page = Math.floor(position / data.pageRows);
    if (page !== state.page) { state.page = page; renderPage(); }
    $("detail").hidden = false;
    $("d-title").textContent = r.path;
    var facts = "score " + fmt(r.score) + ", p-value " + fmt(r.p) + ", verdict " +
      (r.defect ? "defect" : "good") + ", " + (r.nr === null ? "\u2013" : r.nr) + " region(s)" +
      (data.labels ? ", true class " + r.cls : "") + "  (" + (position + 1) + " of " + view.length + ")";
    $("d-facts").textContent = facts;
    var panes = $("d-panes");
    panes.replaceChildren();
    [["original", r.orig, true], ["heat map", r.hm, false], ["overlay", r.ov, true]].forEach(function (p) {
      if (!p[1] && !(p[0] === "original" && r.thumb)) return;
      var figure = el("figure", null, "pane");
      var wrap = el("div", null, "wrap");
      var img = el("img");
      img.setAttribute("alt", p[0] + " of " + r.path);
      img.setAttribute("src", p[1] || r.thumb);
      if (!p[1]) { img.style.width = (r.w || 320) + "px"; }
      wrap.appendChild(img);
      if (p[2] && r.boxes.length && r.w && r.h) wrap.appendChild(boxes(r));
      figure.appendChild(wrap);
      figure.appendChild(el("figcaption", p[0] + (p[1] ? "" : " (thumbnail: the full picture is not beside this report)")));
      panes.appendChild(figure);
    });
    var list = $("d-regions");
    list.replaceChildren();
    if (r.boxes.length) {
      list.appendChild(el("h3", r.boxes.length + " region(s), largest first (rows, columns of the original)"));
      var ul = el("ul");
      r.boxes.forEach(function (b) {
        ul.appendChild(el("li", "rows " + b[0] + "\u2013" + b[2] + ", columns " + b[1] + "\u2013" + b[3] +
          " (" + (b[2] - b[0]) + " \u00d7 " + (b[3] - b[1]) + " px)"));
      });
      list.appendChild(ul);
    }
    showReview(r);
  }
  function boxes(r) {
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "boxes");
    svg.setAttribute("viewBox", "0 0 " + r.w + " " + r.h);
    svg.setAttribute("preserveAspectRatio", "none");
    r.boxes.forEach(function (b) {
      var rect = document.createElementNS(ns, "rect");
      rect.setAttribute("x", b[1]); rect.setAttribute("y", b[0]);
      rect.setAttribute("width", b[3] - b[1]); rect.setAttribute("height", b[2] - b[0]);
      svg.appendChild(rect);
    });
    return svg;
  }
  function showReview(r) {
    var review = reviews[r.path] || {};
    $("d-decision").textContent = review.decision ? "your decision: " + DECISIONS[review.decision] : "not reviewed";
    $("d-note").value = review.note || "";
    $("d-class").value = review.cls !== undefined ? review.cls : (r.label === 1 ? r.cls : "");
    document.querySelectorAll(".review-bar button").forEach(function (b) {
      b.classList.toggle("chosen", !!review.decision && b.dataset.decision === review.decision);
    });
  }
  function closeDetail() {
    var at = detailAt;
    $("detail").hidden = true;
    detailAt = -1;
    renderPage();  // the review marks made in the detail view
    var tr = tbody.querySelector("tr[data-position='" + at + "']");
    if (tr) tr.focus();  // back where the keyboard left the table
  }
  function decide(decision) {
    if (detailAt < 0) return;
    var r = view[detailAt];
    if (!decision) { delete reviews[r.path]; }
    else {
      reviews[r.path] = {
        decision: decision, note: $("d-note").value, cls: $("d-class").value,
        time: new Date().toISOString()
      };
    }
    saveReviews();
    showReview(r);
  }
  function keepText() {
    if (detailAt < 0) return;
    var r = view[detailAt];
    if (!reviews[r.path]) return;
    reviews[r.path].note = $("d-note").value;
    reviews[r.path].cls = $("d-class").value;
    saveReviews();
  }
  function updateReviewCount() {
    var n = Object.keys(reviews).length;
    $("review-count").textContent = n + " reviewed in this browser";
  }
  function csvCell(value) {
    var text = value === null || value === undefined ? "" : String(value);
    return /[",\n\r]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }
  function exportReview() {
    var header = ["path", "source", "moved_to", "sha256", "model_verdict", "score", "p_value", "decision",
      "defect_class", "note", "reviewed_at", "model", "model_id", "report_images"];
    var lines = [header.join(",")];
    rows.forEach(function (r) {
      var review = reviews[r.path];
      if (!review) return;
      lines.push([r.path, r.src, r.moved, r.sha, r.defect ? "defect" : "good", r.score, r.p === null ? "" : r.p,
        review.decision, review.cls || "", review.note || "", review.time, data.model, data.modelId,
        rows.length].map(csvCell).join(","));
    });
    var blob = new Blob([lines.join("\n") + "\n"], { type: "text/csv" });
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "review.csv";
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  // Wire up: the static first page is replaced by the same rows, now interactive.
  document.querySelectorAll(".controls, .pager, .help, .review-col").forEach(function (n) { n.hidden = false; });
  var folders = Array.from(new Set(rows.map(function (r) { return r.folder; }))).sort();
  folders.forEach(function (f) { var o = el("option", f); o.value = f; $("f-folder").appendChild(o); });
  document.querySelectorAll("#rows th[data-key]").forEach(function (th) {
    if (th.dataset.key === "thumb") return;
    th.classList.add("sortable");
    th.tabIndex = 0;
    var sort = function () {
      var key = th.dataset.key;
      state.dir = state.key === key ? -state.dir : (key === "path" || key === "cls" ? 1 : -1);
      state.key = key; state.page = 0; applyView();
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (e) { if (e.key === "Enter") sort(); });
  });
  $("f-verdict").addEventListener("change", function (e) { state.verdict = e.target.value; state.page = 0; applyView(); });
  $("f-folder").addEventListener("change", function (e) { state.folder = e.target.value; state.page = 0; applyView(); });
  $("f-review").addEventListener("change", function (e) { state.review = e.target.value; state.page = 0; applyView(); });
  $("f-text").addEventListener("input", function (e) { state.text = e.target.value; state.page = 0; applyView(); });
  $("prev-page").addEventListener("click", function () { state.page -= 1; renderPage(); });
  $("next-page").addEventListener("click", function () { state.page += 1; renderPage(); });
  $("export").addEventListener("click", exportReview);
  tbody.addEventListener("click", function (e) {
    var tr = e.target.closest("tr");
    if (tr) openDetail(Number(tr.dataset.position));
  });
  tbody.addEventListener("keydown", function (e) {
    var tr = e.target.closest("tr");
    if (tr && e.key === "Enter") openDetail(Number(tr.dataset.position));
  });
  $("d-prev").addEventListener("click", function () { openDetail(detailAt - 1); });
  $("d-next").addEventListener("click", function () { openDetail(detailAt + 1); });
  $("d-close").addEventListener("click", closeDetail);
  document.querySelectorAll(".review-bar button").forEach(function (b) {
    b.addEventListener("click", function () { decide(b.dataset.decision); });
  });
  $("d-note").addEventListener("change", keepText);
  $("d-class").addEventListener("change", keepText);
  document.addEventListener("keydown", function (e) {
    if (detailAt < 0) return;
    var typing = e.target.tagName === "INPUT";
    if (e.key === "Escape") { if (typing) { keepText(); e.target.blur(); } else closeDetail(); return; }
    if (typing) { if (e.key === "Enter") { keepText(); e.target.blur(); } return; }
    var keys = { ArrowLeft: -1, ArrowRight: 1 };
    if (keys[e.key]) { e.preventDefault(); openDetail(detailAt + keys[e.key]); return; }
    var decisions = { d: "defect_confirmed", f: "false_alarm", u: "unsure" };
    if (decisions[e.key]) { decide(decisions[e.key]); return; }
    if (e.key === "n") { e.preventDefault(); $("d-note").focus(); }
  });
  updateReviewCount();
  applyView();
})();

// blackstart's incident room: keeps the page current from the journal.
// The server renders every section; this script only listens to the run's
// event stream and swaps in a fresh copy of the same HTML, at most a few
// times a second, so a 10,000-system run does not flood the browser.
"use strict";
(function () {
  const body = document.body;
  const live = document.getElementById("live");
  const say = (text) => { if (live) live.textContent = text; };
  if (body.dataset.list) {
    // The list of runs: refreshed every five seconds.
    setInterval(async () => {
      try {
        const r = await fetch("/?fragment=1", { cache: "no-store" });
        if (r.ok) document.querySelector("main").innerHTML = await r.text();
      } catch (e) { /* the next tick tries again */ }
    }, 5000);
    return;
  }
  const run = body.dataset.run;
  if (!run) return;
  const path = "/runs/" + encodeURIComponent(run);
  let busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const r = await fetch(path + "?fragment=1", { cache: "no-store" });
      if (r.ok) {
        const seq = r.headers.get("X-Journal-Seq");
        document.getElementById("run").innerHTML = await r.text();
        if (seq) body.dataset.seq = seq;
      }
    } catch (e) {
      say("cannot reach the server; retrying");
    }
    setTimeout(() => { busy = false; if (again) { again = false; refresh(); } }, 300);
  }
  // Also every five seconds when nothing happens: a soak's time left, and
  // whether a process still drives the run, move without a record.
  setInterval(() => { if (!busy) refresh(); }, 5000);
  const events = new EventSource("/api/runs/" + encodeURIComponent(run) + "/events?from=" + (body.dataset.seq || 0));
  events.addEventListener("record", () => { say("live"); refresh(); });
  events.addEventListener("end", () => { say("the run has ended"); events.close(); refresh(); });
  events.onerror = () => say("reconnecting…");
})();

"""Nothing typed is lost on leaving: a small browser-side guard for every page.

Streamlit commits a text or number field on Enter or when it loses focus. A click on a
sidebar link, "New patient" or a download button straight after typing moves the focus
and starts the click's own run at once; what was typed did not reach the case in 2 of 3
tries (the page shows "Press Enter to apply" until it does). The guard holds such a click:
it lets the field commit (its ``on_change`` copies the value into the case store), waits
until that run has finished, then clicks again for the user. A click on a link or button
while a run is going on is held the same way until it ends (a download clicked mid-run
asked for a file that the run had replaced: "Deferred file not found"). Other clicks pass
straight through. On a phone it also folds the sidebar away after a page link is
followed (it would otherwise cover the new page). A choice (an option of a selectbox, a
radio button, a checkbox) counts as a commit too: it is sent at once and can wait behind a
run the same way.

"That run" is the commit's own run, counted: a run that starts after the commit. A field
committed while another run is going on is served by the next run, which the server
starts only once the current one has ended (``fastReruns`` is off) and its clean-up is
done; the page already shows "not running" in between. A click replayed in that gap
asked for the new page with the page's widget values left out, the server merged the two
waiting requests, and the newer one's values won: the field's value never reached the
case (a reference typed straight after a note, then a sidebar link: lost in 6 of 6 runs of
the browser tests with two busy processes beside them, as on a shared CI machine). A field
counts as edited from its first keystroke (an ``input`` event) to its commit, so the hold
does not depend on Streamlit's "Press Enter to apply" hint, which a narrow column or a
phone does not show.
"""

import streamlit as st

_JS = """
export default function(component) {
  if (window.__skinCommitGuard) { return; }
  window.__skinCommitGuard = true;
  const doc = window.document;
  let pending = null;   // the edited field the pressed control took the focus from
  let replaying = false;
  let committing = 0;   // until when a field's commit (Enter, focus lost) may not have run
  let runs = 0;         // runs seen starting (the app's script state turning to "running")
  let lastState = null;
  let owed = 0;         // the run count that serves every commit so far
  const typed = new WeakSet();  // fields with keystrokes not yet committed

  const SIDEBAR_TOGGLES = "[data-testid=stExpandSidebarButton], " +
                          "[data-testid=stSidebarCollapseButton]";
  const FIELDS = "[data-testid=stTextInput], [data-testid=stTextArea], " +
                 "[data-testid=stNumberInput]";
  function fieldOf(el) {
    if (!el || !(el.tagName === "INPUT" || el.tagName === "TEXTAREA")) { return null; }
    return el.closest(FIELDS) ? el : null;
  }
  function edited(el) {
    const field = fieldOf(el);
    if (!field) { return null; }
    // Streamlit's hint under a field with uncommitted text; absent where the column is
    // narrow, so the field's own keystrokes count too
    const hint = field.closest(FIELDS).querySelector("[data-testid=InputInstructions]");
    const waiting = hint && (hint.textContent || "").includes("Enter to apply");
    return waiting || typed.has(field) ? field : null;
  }
  function scriptState() {
    const app = doc.querySelector("[data-test-script-state]");
    return app ? app.getAttribute("data-test-script-state") : "notRunning";
  }
  function noteState() {
    const state = scriptState();
    if (state === "running" && lastState !== "running") { runs += 1; }
    lastState = state;
  }
  // every change of the script state, however short the run (polling could miss one)
  (function watch() {
    const app = doc.querySelector("[data-test-script-state]");
    if (!app) { setTimeout(watch, 200); return; }
    noteState();
    new MutationObserver(noteState).observe(
      app, {attributes: true, attributeFilter: ["data-test-script-state"]});
  })();
  function idle() {
    const state = scriptState();
    return state !== "running" && state !== "rerunRequested" &&
      !doc.querySelector("[data-testid=stStatusWidget]");
  }
  // wait for the run that serves every commit so far (or 3 s of calm without one: a
  // commit that changed nothing starts no run, and two commits can share one run), then
  // for the page to stay calm
  function whenIdle(done) {
    let calm = 0, waited = 0, quiet = 0;
    const tick = () => {
      noteState();
      const still = idle();
      quiet = still ? quiet + 50 : 0;
      const served = runs >= owed || quiet > 3000;
      calm = still && served ? calm + 1 : 0;
      waited += 50;
      if (calm >= 6 || waited > 30000) { done(); } else { setTimeout(tick, 50); }
    };
    setTimeout(tick, 50);
  }
  function commit() {
    noteState();
    committing = Date.now() + 1500;
    // served by the next run to start; while an earlier commit's run has not started
    // yet, this one may wait behind it: by the run after that
    owed = runs < owed ? owed + 1 : runs + 1;
  }
  const committed = (ev) => {
    const commitKey = ev.key === "Enter" &&
      (ev.target.tagName !== "TEXTAREA" || ev.ctrlKey || ev.metaKey);
    if ((ev.type === "focusout" || commitKey) && edited(ev.target)) {
      commit();
      typed.delete(ev.target);
    }
  };
  doc.addEventListener("input", (ev) => {
    const field = fieldOf(ev.target);
    if (field) { typed.add(field); }
  }, true);
  // a choice (a selectbox's or multiselect's option, a radio button, a checkbox or toggle)
  // is committed at once, and can wait behind a run the same way
  doc.addEventListener("click", (ev) => {
    if (!replaying && ev.target.closest && ev.target.closest("[role=option]")) { commit(); }
  }, true);
  doc.addEventListener("change", (ev) => {
    const t = ev.target;
    if (t && t.tagName === "INPUT" && (t.type === "radio" || t.type === "checkbox")) {
      commit();
    }
  }, true);
  // on a phone the sidebar covers the page: fold it away once a page link was followed,
  // unless the user opens it again meanwhile
  let openedAt = 0;
  doc.addEventListener("pointerdown", (ev) => {
    if (ev.target.closest("[data-testid=stExpandSidebarButton]")) { openedAt = Date.now(); }
  }, true);
  doc.addEventListener("click", (ev) => {
    if (!ev.target.closest("[data-testid=stSidebarNavLink]") || window.innerWidth > 640) {
      return;
    }
    let tries = 0;
    const followed = Date.now();
    const fold = () => {  // the new page may still be drawing: try again for a few seconds
      if (openedAt > followed) { return; }
      const bar = doc.querySelector("[data-testid=stSidebar]");
      if (!bar || bar.getAttribute("data-collapsed") !== "false") { return; }
      const button = doc.querySelector("button[aria-label='Collapse sidebar']");
      // its own click is not the user's: never held and replayed later (a late replay
      // folded a sidebar the user had opened again)
      if (button) { replaying = true; button.click(); replaying = false; }
      if (++tries < 10) { setTimeout(fold, 500); }
    };
    setTimeout(fold, 400);
  });
  // The run may redraw a held control: it is found again by its link, or by its widget
  // key and label ("Remove this case" and "Download report (PDF)" exist once per case:
  // a label alone could click another case's). A control without either is found again
  // only while its label is unique; otherwise the click is dropped, never misdirected.
  function keyOf(el) {  // the widget key Streamlit puts on the element's container
    const keyed = el.closest("[class*='st-key-']");
    return keyed ? Array.from(keyed.classList).find((c) => c.startsWith("st-key-")) : null;
  }
  function identity(control) {
    return {href: control.getAttribute("href"), key: keyOf(control), label: control.textContent};
  }
  function unchanged(control, id) {  // a node the run kept may now draw another widget
    const now = identity(control);
    return control.isConnected &&
      now.href === id.href && now.key === id.key && now.label === id.label;
  }
  function findAgain(id) {
    const all = Array.from(doc.querySelectorAll("a, button"));
    if (id.href) { return all.find((c) => c.getAttribute("href") === id.href) || null; }
    const labelled = all.filter((c) => c.textContent === id.label);
    if (id.key) { return labelled.find((c) => keyOf(c) === id.key) || null; }
    return labelled.length === 1 ? labelled[0] : null;
  }
  doc.addEventListener("keydown", committed, true);
  doc.addEventListener("focusout", committed, true);
  doc.addEventListener("pointerdown", (ev) => {
    if (replaying) { return; }
    const field = edited(doc.activeElement);
    pending = field && !field.contains(ev.target) ? field : null;
  }, true);
  doc.addEventListener("click", (ev) => {
    if (replaying) { return; }
    const control = ev.target.closest("a, button");
    const field = pending;
    pending = null;
    // opening or folding the sidebar starts no run and changes no case: never held (the
    // field the tap took the focus from commits on its own)
    if (control && control.closest(SIDEBAR_TOGGLES)) { return; }
    // hold a click on a link or button while a field waits to commit or a run is going on
    // (a download clicked mid-run would ask for a file that run replaced)
    // (or, for up to 10 s, while a commit's run has not been seen)
    const now = Date.now();
    const recent = now < committing || (runs < owed && now < committing + 10000);
    if (!control || (!field && !recent && idle())) { return; }
    ev.preventDefault();
    ev.stopImmediatePropagation();
    if (field) { field.blur(); }
    const id = identity(control);
    whenIdle(() => {
      const again = unchanged(control, id) ? control : findAgain(id);
      if (again) { replaying = true; again.click(); replaying = false; }
    });
  }, true);
}
"""

_guard = st.components.v2.component("skin_commit_guard", js=_JS)


def commit_guard() -> None:
    """Mount the guard (invisible; installed once per browser tab)."""
    _guard(key="skin_commit_guard", height=0)

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
followed (it would otherwise cover the new page).
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

  function edited(el) {
    if (!el || !(el.tagName === "INPUT" || el.tagName === "TEXTAREA")) { return null; }
    const box = el.closest("[data-testid=stTextInput], [data-testid=stTextArea], " +
                           "[data-testid=stNumberInput]");
    // Streamlit shows its "Press Enter to apply" hint under a field with uncommitted text
    return box && box.querySelector("[data-testid=InputInstructions]") ? el : null;
  }
  function idle() {
    const app = doc.querySelector("[data-test-script-state]");
    const state = app ? app.getAttribute("data-test-script-state") : "notRunning";
    return state !== "running" && state !== "rerunRequested" &&
      !doc.querySelector("[data-testid=stStatusWidget]");
  }
  // after a commit, wait for its run to start (or 1.5 s) and then to end and stay ended
  function whenIdle(done, expectRun) {
    let calm = 0, waited = 0, started = !expectRun;
    const tick = () => {
      const quiet = idle();
      started = started || !quiet || waited > 1500;
      calm = quiet && started ? calm + 1 : 0;
      waited += 50;
      if (calm >= 6 || waited > 30000) { done(); } else { setTimeout(tick, 50); }
    };
    setTimeout(tick, 50);
  }
  const committed = (ev) => {
    if (edited(ev.target) && (ev.type === "focusout" || ev.key === "Enter")) {
      committing = Date.now() + 1500;
    }
  };
  // on a phone the sidebar covers the page: fold it away once a page link was followed
  doc.addEventListener("click", (ev) => {
    if (!ev.target.closest("[data-testid=stSidebarNavLink]") || window.innerWidth > 640) {
      return;
    }
    let tries = 0;
    const fold = () => {  // the new page may still be drawing: try again for a few seconds
      const bar = doc.querySelector("[data-testid=stSidebar]");
      if (!bar || bar.getAttribute("data-collapsed") !== "false") { return; }
      const button = doc.querySelector("button[aria-label='Collapse sidebar']");
      if (button) { button.click(); }
      if (++tries < 10) { setTimeout(fold, 500); }
    };
    setTimeout(fold, 400);
  });
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
    // hold a click on a link or button while a field waits to commit or a run is going on
    // (a download clicked mid-run would ask for a file that run replaced)
    const recent = Date.now() < committing;
    if (!control || (!field && !recent && idle())) { return; }
    ev.preventDefault();
    ev.stopImmediatePropagation();
    if (field) { field.blur(); }
    const label = control.getAttribute("href") || control.textContent;
    whenIdle(() => {
      // the run may have redrawn the control: find it again by its link or label
      let again = control.isConnected ? control : null;
      if (!again) {
        again = Array.from(doc.querySelectorAll("a, button")).find(
          (c) => (c.getAttribute("href") || c.textContent) === label) || null;
      }
      if (again) { replaying = true; again.click(); replaying = false; }
    }, Boolean(field) || recent);
  }, true);
}
"""

_guard = st.components.v2.component("skin_commit_guard", js=_JS)


def commit_guard() -> None:
    """Mount the guard (invisible; installed once per browser tab)."""
    _guard(key="skin_commit_guard", height=0)

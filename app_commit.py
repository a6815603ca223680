"""Nothing typed is lost on leaving: a small browser-side guard for every page.

Streamlit commits a text or number field on Enter or when it loses focus. A click on a
sidebar link, "New patient" or a download button straight after typing moves the focus
and starts the click's own run at once; what was typed did not reach the case in 2 of 3
tries (the page shows "Press Enter to apply" until it does). The guard holds such a click:
it lets the field commit (its ``on_change`` copies the value into the case store), waits
until that run has finished, then clicks again for the user. Clicks with nothing pending
pass straight through.
"""

import streamlit as st

_JS = """
export default function(component) {
  if (window.__skinCommitGuard) { return; }
  window.__skinCommitGuard = true;
  const doc = window.document;
  let pending = null;   // the edited field the pressed control took the focus from
  let replaying = false;

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
      !doc.querySelector("[data-testid=stStatusWidget] button");
  }
  function whenIdle(done) {
    let calm = 0, waited = 0;
    const tick = () => {
      calm = idle() ? calm + 1 : 0;
      waited += 50;
      if (calm >= 4 || waited > 15000) { done(); } else { setTimeout(tick, 50); }
    };
    setTimeout(tick, 100);
  }
  doc.addEventListener("pointerdown", (ev) => {
    if (replaying) { return; }
    const field = edited(doc.activeElement);
    pending = field && !field.contains(ev.target) ? field : null;
  }, true);
  doc.addEventListener("click", (ev) => {
    if (replaying || !pending) { return; }
    const control = ev.target.closest("a, button");
    const field = pending;
    pending = null;
    if (!control) { return; }
    ev.preventDefault();
    ev.stopImmediatePropagation();
    field.blur();
    const label = control.getAttribute("href") || control.textContent;
    whenIdle(() => {
      // the run may have redrawn the control: find it again by its link or label
      let again = control.isConnected ? control : null;
      if (!again) {
        again = Array.from(doc.querySelectorAll("a, button")).find(
          (c) => (c.getAttribute("href") || c.textContent) === label) || null;
      }
      if (again) { replaying = true; again.click(); replaying = false; }
    });
  }, true);
}
"""

_guard = st.components.v2.component("skin_commit_guard", js=_JS)


def commit_guard() -> None:
    """Mount the guard (invisible; installed once per browser tab)."""
    _guard(key="skin_commit_guard", height=0)

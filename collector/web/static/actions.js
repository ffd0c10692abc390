// Sends the page's action forms (acknowledge, silence, log out) to the API's own routes with the session's
// anti-forgery token in the X-CSRF-Token header, then reloads the page; a refusal shows the API's reason.
(function () {
  "use strict";
  const token = document.querySelector('meta[name="csrf-token"]')?.content || "";
  for (const form of document.querySelectorAll("form[data-api]")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = {};
      for (const [name, value] of new FormData(form)) {
        // A datetime-local field is Vietnam time (the sites' time), sent with its offset.
        body[name] = form.elements[name].type === "datetime-local" ? `${value}:00+07:00` : value;
      }
      const method = form.dataset.method || "POST";
      const response = await fetch(form.dataset.api, {
        method,
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": token },
        body: method === "DELETE" ? undefined : JSON.stringify(body),
      });
      if (response.ok) {
        window.location.assign(form.dataset.then || window.location.href);
        return;
      }
      let reason = `${response.status}`;
      try { reason = (await response.json()).detail || reason; } catch (_) { /* not problem details */ }
      const shown = document.getElementById("action-error");
      shown.textContent = reason;
      shown.hidden = false;
    });
  }
})();

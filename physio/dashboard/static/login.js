"use strict";
// Show the failure note after a redirect with ?failed=1 (no inline script: CSP).
if (new URLSearchParams(location.search).has("failed")) {
  document.getElementById("failed").hidden = false;
}

// The sample app's front end: plain JavaScript, no build step.
// Every backend answer that is not a success is shown on the page (#message),
// with the sentence the backend sent in its JSON "message".
(function () {
  "use strict";

  const body = document.body;
  const urls = {
    login: body.dataset.loginUrl,
    logout: body.dataset.logoutUrl,
    fakeToken: body.dataset.fakeTokenUrl,
  };
  const messageBox = document.getElementById("message");
  const resultBox = document.getElementById("result");

  function showMessage(text) {
    messageBox.textContent = text;
    messageBox.hidden = false;
  }

  function clearMessage() {
    messageBox.hidden = true;
    messageBox.textContent = "";
  }

  // One helper for every call: same-origin cookie, JSON both ways, errors as sentences.
  async function call(method, url, payload) {
    const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (payload !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(payload);
    }
    let response;
    try {
      response = await fetch(url, options);
    } catch (err) {
      return { ok: false, status: 0, data: null, text: "Could not reach the server. Is it still running?" };
    }
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (response.ok) {
      return { ok: true, status: response.status, data, text: "" };
    }
    let text = response.status + ": " + ((data && data.message) || response.statusText || "unexpected answer");
    const wait = response.headers.get("Retry-After");
    if (wait) {
      text += " (try again in " + wait + " s)";
    }
    return { ok: false, status: response.status, data, text };
  }

  function withTimeout(promise, ms) {
    return Promise.race([
      Promise.resolve(promise),
      new Promise(function (resolve, reject) {
        setTimeout(function () { reject(new Error("timed out")); }, ms);
      }),
    ]);
  }

  // Set while our own Log out button (or a revoked token) waits for the widget to confirm its logout.
  let widgetLoggedOut = null;

  // Sign out of the widget: it forgets its login and its token, and confirms with onProfileLogout.
  function disconnectWidget() {
    const widget = window.PluralitySocialConnect;
    if (!widget || typeof widget.disconnectProfile !== "function") {
      return Promise.resolve();
    }
    const done = new Promise(function (resolve) { widgetLoggedOut = resolve; });
    try {
      widget.disconnectProfile();
    } catch (err) {
      widgetLoggedOut = null;
      return Promise.resolve();
    }
    return done;
  }

  // The one step both modes share: hand the pluralityToken to the backend, which checks it
  // with Plurality and answers with an HttpOnly session cookie. The token is not kept here.
  async function signIn(token) {
    const result = await call("POST", urls.login, { token });
    if (result.status === 401 && result.data && result.data.error === "token_revoked") {
      // The site revoked this user's sign-ins after the widget got its token, and Plurality
      // will not issue a new one while the widget keeps the old: sign out of the widget,
      // so that signing in again gets a fresh token.
      await withTimeout(disconnectWidget(), 3000).catch(function () { /* the message says what to do */ });
      showMessage("Your sign-in was revoked. Sign in with Plurality again.");
      return false;
    }
    if (!result.ok) {
      showMessage("Sign-in failed: " + result.text);
      return false;
    }
    window.location.assign(body.dataset.next || "/profile");
    return true;
  }

  async function logOut() {
    clearMessage();
    let widgetDone = Promise.resolve();
    if (window.localStorage.getItem("lit") === "true") {
      // End the widget's own login too, or it would report a login (and sign us in) on the next page.
      widgetDone = disconnectWidget();
    }
    const result = await call("POST", urls.logout);
    if (!result.ok) {
      showMessage("Logout failed: " + result.text);
      return;
    }
    await withTimeout(widgetDone, 3000).catch(function () { /* go on: the backend session is gone */ });
    window.location.assign("/");
  }

  function showResult(label, result) {
    if (resultBox) {
      const shown = result.data !== null ? JSON.stringify(result.data, null, 2) : "(no JSON body)";
      resultBox.textContent = label + " -> " + result.status + "\n" + shown;
    }
    if (result.ok) {
      clearMessage();
    } else {
      showMessage(label + " failed: " + result.text);
    }
  }

  function onClick(selector, handler) {
    document.querySelectorAll(selector).forEach(function (element) {
      element.addEventListener("click", async function () {
        element.disabled = true;
        try {
          await handler();
        } finally {
          element.disabled = false;
        }
      });
    });
  }

  // -- demo mode: a token from the stand-in, posted exactly like the widget's --------------
  onClick("#demo-signin", async function () {
    clearMessage();
    const email = document.getElementById("demo-email").value.trim();
    const minted = await call("POST", urls.fakeToken, email ? { email } : {});
    if (!minted.ok) {
      showMessage("The demo could not get a token: " + minted.text);
      return;
    }
    // minted.data is shaped like the widget's getLoginInfo().data: {status, pluralityToken}.
    await signIn(minted.data.pluralityToken);
  });

  // -- the protected page's buttons ---------------------------------------------------------
  onClick("#call-api", async function () {
    showResult("GET /api/me", await call("GET", "/api/me"));
  });
  onClick("#transfer", async function () {
    showResult("POST /api/transfer", await call("POST", "/api/transfer", {}));
  });
  onClick("[data-action=logout]", logOut);

  // -- "Your devices": sign one session out, or every other -----------------------------------
  document.querySelectorAll("[data-action=end-session]").forEach(function (button) {
    button.addEventListener("click", async function () {
      button.disabled = true;
      clearMessage();
      const url = body.dataset.sessionsUrl + "/" + encodeURIComponent(button.dataset.handle);
      const result = await call("DELETE", url);
      if (!result.ok) {
        button.disabled = false;
        showMessage("Could not sign that device out: " + result.text);
        return;
      }
      // This very device: signed out like a logout; any other: the list without it.
      window.location.assign(result.data && result.data.authenticated === false ? "/" : "/devices");
    });
  });
  onClick("#end-others", async function () {
    clearMessage();
    const result = await call("POST", body.dataset.sessionsUrl + "/end-others", {});
    if (!result.ok) {
      showMessage("Could not sign the other devices out: " + result.text);
      return;
    }
    window.location.assign("/devices");
  });

  // -- real mode: Plurality's widget --------------------------------------------------------
  let signingIn = false;

  // onDataReturned({status, pluralityToken}): the widget has a login.
  async function onWidgetLogin(loginData) {
    if (body.dataset.authenticated === "true" || signingIn) {
      return; // the backend already has a session for this browser
    }
    signingIn = true;
    let token = loginData && loginData.pluralityToken;
    try {
      // As documented: the token is getLoginInfo()'s data.pluralityToken.
      const info = await withTimeout(window.PluralitySocialConnect.getLoginInfo(), 5000);
      if (info && info.data && info.data.pluralityToken) {
        token = info.data.pluralityToken;
      }
    } catch (err) {
      // keep the token the callback handed over
    }
    if (token) {
      await signIn(token);
    } else {
      showMessage("The Plurality widget reported a login but gave no token.");
    }
    signingIn = false;
  }

  // onProfileLogout({logout, message}): the user logged out in the widget; end ours too.
  async function onWidgetLogout() {
    if (widgetLoggedOut) {
      widgetLoggedOut(); // our Log out button (or signIn, for a revoked token) started this and does the rest
      widgetLoggedOut = null;
      return;
    }
    if (body.dataset.authenticated !== "true") {
      return;
    }
    const result = await call("POST", urls.logout);
    if (!result.ok) {
      showMessage("Logout failed: " + result.text);
      return;
    }
    window.location.assign("/");
  }

  function mountWidget() {
    const mount = document.getElementById("plurality-widget");
    if (!mount) {
      return;
    }
    const Widget = window.PluralitySocialConnect;
    if (!window.React || !window.ReactDOM || !Widget) {
      showMessage("Plurality's widget could not be loaded from unpkg.com. Check the network, then reload.");
      return;
    }
    const element = window.React.createElement(Widget, {
      options: { clientId: body.dataset.clientId, theme: "light", text: "Sign in with Plurality" },
      onDataReturned: onWidgetLogin,
      onProfileLogout: onWidgetLogout,
    });
    window.ReactDOM.createRoot(mount).render(element);
  }

  if (body.dataset.mode === "real") {
    mountWidget();
  }
})();

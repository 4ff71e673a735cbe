// The stand-in for Plurality's widget (@plurality-network/smart-profile-wallet 2.19.0) in the
// browser tests, with the behaviour the pages rely on (docs/plurality-api.rst):
// - its login lives in the browser's storage ("lit" = "true"), and on every page load where
//   it restores one it calls onDataReturned({status, pluralityToken}) again, old token and all;
// - getLoginInfo() resolves {id, eventName: "getLoginInfo", data: {status, pluralityToken}};
// - disconnectProfile() forgets the login and answers with onProfileLogout({logout, message}).
// Its "Sign in with Plurality" button gets a fresh token from TOKEN_URL, which the test
// answers with a token of the stand-in (as Plurality would mint one at a new sign-in).
(function () {
  "use strict";
  const TOKEN_URL = "https://stand-in-widget.test/token";
  let props = null;
  let root = null;

  function stored() {
    return window.localStorage.getItem("lit") === "true" ? window.localStorage.getItem("standInToken") : null;
  }

  function draw() {
    root.textContent = "";
    const button = document.createElement("button");
    button.type = "button";
    if (stored()) {
      button.textContent = "Plurality: Logout";
      button.addEventListener("click", function () { Widget.disconnectProfile(); });
    } else {
      button.textContent = "Sign in with Plurality";
      button.addEventListener("click", signIn);
    }
    root.appendChild(button);
  }

  async function signIn() {
    const answer = await fetch(TOKEN_URL, { method: "POST" });
    const token = (await answer.json()).pluralityToken;
    window.localStorage.setItem("lit", "true");
    window.localStorage.setItem("standInToken", token);
    draw();
    props.onDataReturned({ status: true, pluralityToken: token });
  }

  function Widget() {}
  Widget.mount = function (container, given) {
    props = given;
    root = document.createElement("span");
    root.className = "stand-in-widget";
    container.appendChild(root);
    draw();
    const token = stored();
    if (token) {
      setTimeout(function () { props.onDataReturned({ status: true, pluralityToken: token }); }, 0);
    }
  };
  Widget.getLoginInfo = function () {
    const token = stored();
    return Promise.resolve(
      token ? { id: 1, eventName: "getLoginInfo", data: { status: true, pluralityToken: token } } : undefined
    );
  };
  Widget.disconnectProfile = function () {
    window.localStorage.removeItem("lit");
    window.localStorage.removeItem("standInToken");
    const count = Number(window.localStorage.getItem("standInDisconnects") || "0");
    window.localStorage.setItem("standInDisconnects", String(count + 1));
    if (root) {
      draw();
    }
    setTimeout(function () {
      if (props && props.onProfileLogout) {
        props.onProfileLogout({ logout: true, message: "Logged out" });
      }
    }, 0);
  };
  window.PluralitySocialConnect = Widget;
})();

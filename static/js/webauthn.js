// Security keys and passkeys (WebAuthn): the browser's half of
// accounts/security_keys.py. A plain form does the posting, so the server
// answers as it does to a typed code (errors, the lockout page, the recovery
// codes); this script only fetches the ceremony's options, asks the browser
// for the key, and puts its answer in the form's "key_answer" field.
//
//   <form data-webauthn="add" data-options-url="…">      adding a key: on submit
//   <button type="button" data-webauthn="sign" data-options-url="…">
//                                                        signing in or confirming with a key
//   [data-webauthn-error]    where a failure is said, in the same form
//   [data-webauthn-unsupported]  shown when this browser has no WebAuthn
// Elements marked data-webauthn start hidden and are shown when the browser can use them.
(function () {
  "use strict";

  // base64url <-> bytes, as WebAuthn's JSON carries binary fields (RFC 4648 §5, no padding).
  function toBytes(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) base64 += "=";
    var binary = atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  function toText(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function withIds(descriptors) {
    return (descriptors || []).map(function (descriptor) {
      return Object.assign({}, descriptor, { id: toBytes(descriptor.id) });
    });
  }

  // The options the server made (py_webauthn's options_to_json), with their binary fields as bytes.
  function creationOptions(json) {
    return Object.assign({}, json, {
      challenge: toBytes(json.challenge),
      user: Object.assign({}, json.user, { id: toBytes(json.user.id) }),
      excludeCredentials: withIds(json.excludeCredentials),
    });
  }

  function requestOptions(json) {
    return Object.assign({}, json, {
      challenge: toBytes(json.challenge),
      allowCredentials: withIds(json.allowCredentials),
    });
  }

  // The key's answer as py_webauthn reads it (parse_registration_credential_json and
  // parse_authentication_credential_json): the same envelope around each ceremony's response.
  function credentialJSON(credential, response) {
    return {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response: response,
      clientExtensionResults: credential.getClientExtensionResults(),
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
    };
  }

  function registrationJSON(credential) {
    var response = credential.response;
    return credentialJSON(credential, {
      clientDataJSON: toText(response.clientDataJSON),
      attestationObject: toText(response.attestationObject),
      transports: response.getTransports ? response.getTransports() : [],
    });
  }

  function assertionJSON(credential) {
    var response = credential.response;
    return credentialJSON(credential, {
      clientDataJSON: toText(response.clientDataJSON),
      authenticatorData: toText(response.authenticatorData),
      signature: toText(response.signature),
      userHandle: response.userHandle ? toText(response.userHandle) : undefined,
    });
  }

  // A POST with the form's CSRF token; the server answers the options, or {"error": "…"} in words.
  function fetchOptions(form, url) {
    var token = form.querySelector("[name=csrfmiddlewaretoken]");
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": token ? token.value : "", Accept: "application/json" },
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (!response.ok) throw new Error(body.error || "The server did not answer: reload the page and try again.");
        return body;
      });
    });
  }

  // The browser's own errors, in words a person can act on.
  function sayWhy(error, adding) {
    if (error && error.name === "NotAllowedError") {
      return "The key did not answer, or you cancelled. Try again, and touch the key when it blinks.";
    }
    if (error && error.name === "InvalidStateError" && adding) {
      return "This key is already registered to your account.";
    }
    if (error && error.name === "SecurityError") {
      return "This browser refused to use a key here: open the site by its name over HTTPS.";
    }
    return (error && error.message) || "Something went wrong with the key. Try again.";
  }

  function showError(form, message) {
    var place = form.querySelector("[data-webauthn-error]");
    if (!place) return;
    place.textContent = message;
    place.hidden = !message;
  }

  function answer(form, json) {
    var field = form.querySelector("[name=key_answer]");
    field.value = JSON.stringify(json);
    // A key answers in place of a code: the typed fields are not needed now.
    form.querySelectorAll("input[required]").forEach(function (input) { input.required = false; });
    form.submit();
  }

  function addKey(event) {
    var form = event.target;
    if (form.getAttribute("data-webauthn") !== "add") return;
    event.preventDefault();
    if (!form.reportValidity()) return;
    var button = form.querySelector("button[type=submit]");
    button.disabled = true;
    showError(form, "");
    fetchOptions(form, form.dataset.optionsUrl)
      .then(function (options) { return navigator.credentials.create({ publicKey: creationOptions(options) }); })
      .then(function (credential) { answer(form, registrationJSON(credential)); })
      .catch(function (error) {
        showError(form, sayWhy(error, true));
        button.disabled = false;
      });
  }

  function signWithKey(event) {
    var button = event.target.closest("[data-webauthn=sign]");
    if (!button) return;
    var form = button.form || button.closest("form");
    button.disabled = true;
    showError(form, "");
    fetchOptions(form, button.dataset.optionsUrl)
      .then(function (options) { return navigator.credentials.get({ publicKey: requestOptions(options) }); })
      .then(function (credential) { answer(form, assertionJSON(credential)); })
      .catch(function (error) {
        showError(form, sayWhy(error, false));
        button.disabled = false;
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var supported = !!(window.PublicKeyCredential && navigator.credentials && window.isSecureContext);
    document.querySelectorAll("[data-webauthn]").forEach(function (element) { element.hidden = !supported; });
    document.querySelectorAll("[data-webauthn-unsupported]").forEach(function (element) { element.hidden = supported; });
    if (!supported) return;
    document.addEventListener("submit", addKey);
    document.addEventListener("click", signWithKey);
  });
})();

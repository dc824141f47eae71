// The API client of the console: every call goes to the public /api/v1 routes with the session
// cookie (HttpOnly, set by the login answer) and, on calls that change something, the session's
// CSRF token in X-CSRF-Token. The token comes in the login answer and, after a reload, from
// GET /api/v1/auth/session; it is kept in memory only.

let csrfToken = null;

/** An error answer of the API: HTTP status, the stable code and the API's message. */
export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code || "http_" + status;
    this.body = body;
  }
}

export function setCsrf(token) {
  csrfToken = token || null;
}

/** A query string from an object, leaving out empty values; arrays repeat the name. */
export function qs(params) {
  const out = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => out.append(k, x));
    else out.append(k, String(v));
  }
  const s = out.toString();
  return s ? "?" + s : "";
}

/** Calls the API; answers the parsed JSON (null for 204), throws ApiError otherwise. */
export async function call(method, path, body, { raw = false } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError(0, "network", "The server could not be reached. Check the connection and try again.");
  }
  if (response.ok) {
    if (raw) return response;
    if (response.status === 204 || response.status === 202) return null;
    return response.json();
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch (_) {
    /* not JSON */
  }
  const err = payload && payload.error ? payload.error : {};
  const error = new ApiError(response.status, err.code, err.message, payload);
  if (response.status === 401 && err.code === "unauthorized" && !path.startsWith("/api/v1/auth/")) {
    window.dispatchEvent(new CustomEvent("fp:signed-out"));
  }
  if (response.status === 403 && err.code === "password_change_required") {
    window.dispatchEvent(new CustomEvent("fp:password-change"));
  }
  throw error;
}

export const get = (path, params) => call("GET", path + qs(params));
export const post = (path, body) => call("POST", path, body === undefined ? {} : body);
export const put = (path, body) => call("PUT", path, body);
export const del = (path) => call("DELETE", path);

/** The caller's session (and the CSRF token again), or null when not signed in. */
export async function session() {
  try {
    const s = await get("/api/v1/auth/session");
    setCsrf(s.csrf_token);
    return s;
  } catch (e) {
    if (e.status === 401) return null;
    throw e;
  }
}

/** Downloads a file answer of the API (CSV export, alarm log) under its own name. */
export async function download(path, fallbackName) {
  const response = await call("GET", path, undefined, { raw: true });
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="?([^";]+)"?/.exec(disposition);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = match ? match[1] : fallbackName;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  return blob.size;
}

/**
 * Posts a file as the raw request body (a CSV import, a firmware image), reporting upload progress as
 * onProgress(sentBytes, totalBytes) (fetch cannot). Answers the parsed JSON; throws ApiError.
 */
export function upload(path, file, onProgress, contentType) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("Content-Type", contentType || file.type || "text/csv");
    if (csrfToken) xhr.setRequestHeader("X-CSRF-Token", csrfToken);
    xhr.upload.addEventListener("progress", (e) => onProgress && onProgress(e.loaded, e.lengthComputable ? e.total : file.size));
    xhr.addEventListener("error", () => reject(new ApiError(0, "network", "The server could not be reached. Check the connection and try again.")));
    xhr.addEventListener("load", () => {
      let payload = null;
      try {
        payload = JSON.parse(xhr.responseText);
      } catch (_) {
        /* not JSON */
      }
      if (xhr.status >= 200 && xhr.status < 300) return resolve(payload);
      const err = payload && payload.error ? payload.error : {};
      if (xhr.status === 401) window.dispatchEvent(new CustomEvent("fp:signed-out"));
      reject(new ApiError(xhr.status, err.code, err.message, payload));
    });
    xhr.send(file);
  });
}

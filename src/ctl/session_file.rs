//! The ctl's saved session: the server URL, the email and the bearer token, in
//! `$FLEETPULSE_CTL_CONFIG` or `~/.config/fleetpulse/ctl.toml`, written with mode 0600.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::PathBuf;

use serde::Deserialize;

use super::http::{CtlError, Exit};

/// What `ctl login` keeps.
#[derive(Debug, Deserialize)]
pub struct Saved {
    pub url: String,
    pub email: String,
    pub token: String,
}

/// Where the session is kept.
pub fn path() -> Result<PathBuf, CtlError> {
    if let Some(p) = std::env::var_os("FLEETPULSE_CTL_CONFIG") {
        return Ok(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| CtlError::new(Exit::Other, "neither HOME nor FLEETPULSE_CTL_CONFIG is set"))?;
    Ok(base.join("fleetpulse/ctl.toml"))
}

/// Reads the saved session; exit 3 when there is none.
pub fn load() -> Result<Saved, CtlError> {
    let path = path()?;
    let text = std::fs::read_to_string(&path).map_err(|_| {
        CtlError::new(
            Exit::Auth,
            format!("not logged in (no {}): run `fleetpulse ctl login --url URL --email EMAIL`", path.display()),
        )
    })?;
    toml::from_str(&text).map_err(|e| CtlError::new(Exit::Other, format!("{} is malformed: {e}", path.display())))
}

/// Writes the session, readable by its owner only.
pub fn save(saved: &Saved) -> Result<PathBuf, CtlError> {
    let path = path()?;
    let fail = |e: std::io::Error| CtlError::new(Exit::Other, format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    // TOML basic strings accept JSON's escapes.
    let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let text =
        format!("url = {}\nemail = {}\ntoken = {}\n", quote(&saved.url), quote(&saved.email), quote(&saved.token));
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path).map_err(fail)?;
    // An older file keeps its mode on open: set it again.
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    Ok(path)
}

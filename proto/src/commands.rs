//! The command catalog (ING-8, DIA-1..4): every command kind a device understands, its
//! arguments with their bounds and defaults, and whether it answers with a file.
//!
//! The API validates a command against this table before queueing it
//! ([`validate_command`] answers the arguments with every default filled in, so the device
//! receives explicit values), the device side (the load tester) reads what to do from it, and
//! the API documents it (`GET /api/v1/command-kinds`). Arguments are a JSON object; `null` or a
//! missing object means "every default". Unknown kinds, unknown argument names, wrong types and
//! out-of-range values are refused with a message naming the argument.

use serde_json::{Map, Value};

/// Most bytes a packet capture may produce (the device stops capturing there).
pub const MAX_CAPTURE_BYTES: u64 = 64 * 1024 * 1024;

/// One command kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandKind {
    /// Its name in the API and on the wire.
    pub name: &'static str,
    /// What it does, for people.
    pub summary: &'static str,
    /// The file the device uploads as the command's result, if any (its usual name).
    pub file: Option<&'static str>,
    /// Its arguments.
    pub args: &'static [Arg],
    /// Issued only by fleetpulse itself (configuration and firmware pushes, PRV-4), never
    /// through `POST /api/v1/devices/{id}/commands`: the API refuses it there as an unknown kind.
    pub internal: bool,
}

/// One argument of a command kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg {
    /// Its name in the arguments object.
    pub name: &'static str,
    /// What it means, for people.
    pub summary: &'static str,
    /// Its type and bounds.
    pub kind: ArgKind,
}

/// The type of an argument, with its bounds and default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// An integer in `min..=max`; `default` when absent.
    Integer {
        /// Smallest value.
        min: u64,
        /// Largest value.
        max: u64,
        /// Value when absent.
        default: u64,
    },
    /// A host name or an IP address (1 to 253 characters of `[A-Za-z0-9.:-]`); required.
    Host,
    /// Must be `true`: a confirmation for a destructive command; required.
    Confirm,
    /// An `https://` URL of at most [`MAX_URL_BYTES`] printable ASCII characters without
    /// spaces; required.
    HttpsUrl,
    /// A SHA-256 digest as 64 lowercase hexadecimal digits; required.
    Sha256,
    /// An integer in `min..=max`; required (no default).
    Count {
        /// Smallest value.
        min: u64,
        /// Largest value.
        max: u64,
    },
    /// Text of 1 to `max` bytes of printable ASCII without spaces (a version, a name); required.
    Token {
        /// Most bytes.
        max: usize,
    },
    /// Configuration changes: an object of at most `max_entries` parameter keys (1 to
    /// [`MAX_CONFIG_KEY`] bytes of `[A-Za-z0-9._-]`), each a string value of at most
    /// [`MAX_CONFIG_VALUE`] bytes without control characters (set it) or `null` (remove it);
    /// required, not empty.
    ConfigChanges {
        /// Most keys in one command.
        max_entries: u64,
    },
}

/// Longest [`ArgKind::HttpsUrl`], bytes.
pub const MAX_URL_BYTES: usize = 2_048;

/// Largest firmware image a device is told to download ([`UPGRADE_FIRMWARE`]'s `size`), bytes.
pub const MAX_FIRMWARE_BYTES: u64 = 1 << 30;

/// The internal kind of a firmware upgrade (PRV-4): download `url` over HTTPS, check `size` and
/// `sha256`, install, then report `version` as the device's firmware.
pub const UPGRADE_FIRMWARE: &str = "upgrade_firmware";

/// Longest parameter key of a configuration change, in bytes.
pub const MAX_CONFIG_KEY: usize = 128;

/// Longest parameter value of a configuration change, in bytes.
pub const MAX_CONFIG_VALUE: usize = 1_024;

/// Most keys in one `apply_config` command (a push with more changes is split over several).
pub const MAX_CONFIG_CHANGES: u64 = 200;

/// Every command kind, in the order the portal lists them.
pub const COMMAND_KINDS: &[CommandKind] = &[
    CommandKind { name: "reboot", summary: "Reboot the device.", file: None, args: &[], internal: false },
    CommandKind {
        name: "factory_reset",
        summary: "Reset the device to factory settings (erases its configuration).",
        file: None,
        args: &[Arg { name: "confirm", summary: "Must be true.", kind: ArgKind::Confirm }],
        internal: false,
    },
    CommandKind {
        name: "refresh_status",
        summary: "Report status, SIP lines and CPU/memory now instead of at the next interval.",
        file: None,
        args: &[],
        internal: false,
    },
    CommandKind {
        name: "export_config",
        summary: "Upload the device's configuration file.",
        file: Some("config.cfg"),
        args: &[],
        internal: false,
    },
    CommandKind {
        name: "upload_syslog",
        summary: "Upload the device's system log.",
        file: Some("syslog.txt"),
        args: &[],
        internal: false,
    },
    CommandKind {
        name: "packet_capture_start",
        summary: "Start a packet capture; it stops after the duration or size cap and is uploaded.",
        file: Some("capture.pcap"),
        args: &[
            Arg {
                name: "duration_s",
                summary: "Longest capture, seconds.",
                kind: ArgKind::Integer { min: 1, max: 600, default: 60 },
            },
            Arg {
                name: "max_bytes",
                summary: "Largest capture, bytes.",
                kind: ArgKind::Integer { min: 1024, max: MAX_CAPTURE_BYTES, default: 10 * 1024 * 1024 },
            },
        ],
        internal: false,
    },
    CommandKind {
        name: "packet_capture_stop",
        summary: "Stop a running packet capture early and upload it.",
        file: Some("capture.pcap"),
        args: &[],
        internal: false,
    },
    CommandKind {
        name: "ping",
        summary: "Ping a host from the device; the output is the result text.",
        file: None,
        args: &[
            Arg { name: "target", summary: "Host name or IP address.", kind: ArgKind::Host },
            Arg {
                name: "count",
                summary: "Echo requests to send.",
                kind: ArgKind::Integer { min: 1, max: 20, default: 4 },
            },
        ],
        internal: false,
    },
    CommandKind {
        name: "traceroute",
        summary: "Trace the route to a host from the device; the output is the result text.",
        file: None,
        args: &[
            Arg { name: "target", summary: "Host name or IP address.", kind: ArgKind::Host },
            Arg { name: "max_hops", summary: "Most hops.", kind: ArgKind::Integer { min: 1, max: 64, default: 30 } },
        ],
        internal: false,
    },
    CommandKind {
        name: "screenshot",
        summary: "Upload a screenshot of the device's screen.",
        file: Some("screenshot.png"),
        args: &[],
        internal: false,
    },
    CommandKind {
        name: "diagnose",
        summary: "One-click diagnosis: upload a bundle of status, configuration, logs and a short capture.",
        file: Some("diagnosis.tar.gz"),
        args: &[Arg {
            name: "capture_s",
            summary: "Length of the capture in the bundle, seconds.",
            kind: ArgKind::Integer { min: 1, max: 60, default: 10 },
        }],
        internal: false,
    },
    CommandKind {
        name: UPGRADE_FIRMWARE,
        summary: "Download a firmware image over HTTPS, check its size and SHA-256, install it and restart with it.",
        file: None,
        args: &[
            Arg {
                name: "url",
                summary: "Where to download the image (a per-device link with its token).",
                kind: ArgKind::HttpsUrl,
            },
            Arg { name: "sha256", summary: "SHA-256 of the image, lowercase hex.", kind: ArgKind::Sha256 },
            Arg {
                name: "size",
                summary: "Length of the image, bytes.",
                kind: ArgKind::Count { min: 1, max: MAX_FIRMWARE_BYTES },
            },
            Arg {
                name: "version",
                summary: "The firmware version the image installs.",
                kind: ArgKind::Token { max: 64 },
            },
            Arg {
                name: "image",
                summary: "The image's id in fleetpulse (for the record; the device does not need it).",
                kind: ArgKind::Count { min: 1, max: i64::MAX as u64 },
            },
        ],
        internal: true,
    },
    CommandKind {
        name: "apply_config",
        summary: "Apply configuration changes: set the given parameters, remove those given as null (PRV-4).",
        file: None,
        args: &[Arg {
            name: "changes",
            summary: "Parameter key → new value, or null to remove the parameter.",
            kind: ArgKind::ConfigChanges { max_entries: MAX_CONFIG_CHANGES },
        }],
        internal: true,
    },
];

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No such kind in [`COMMAND_KINDS`].
    #[error("unknown command kind {0:?}")]
    UnknownKind(String),
    /// The arguments are not a JSON object (or null).
    #[error("command arguments must be a JSON object")]
    NotAnObject,
    /// An argument the kind does not take.
    #[error("command {kind} takes no argument {arg:?}")]
    UnknownArg {
        /// The kind.
        kind: &'static str,
        /// The argument given.
        arg: String,
    },
    /// A required argument is missing.
    #[error("command {kind} needs the argument {arg}")]
    Missing {
        /// The kind.
        kind: &'static str,
        /// The argument.
        arg: &'static str,
    },
    /// An argument has the wrong type or is out of range.
    #[error("argument {arg} of command {kind}: {reason}")]
    Invalid {
        /// The kind.
        kind: &'static str,
        /// The argument.
        arg: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The kind with this name.
pub fn command_kind(name: &str) -> Option<&'static CommandKind> {
    COMMAND_KINDS.iter().find(|k| k.name == name)
}

/// The kinds an admin may issue (every kind but the [`CommandKind::internal`] ones).
pub fn admin_command_kinds() -> impl Iterator<Item = &'static CommandKind> {
    COMMAND_KINDS.iter().filter(|k| !k.internal)
}

/// Validates a command an admin issues and answers its arguments with every default filled in
/// (a JSON object with exactly the kind's arguments). An [`CommandKind::internal`] kind is
/// refused as unknown.
pub fn validate_command(kind: &str, args: &Value) -> Result<Value, CommandError> {
    match command_kind(kind) {
        Some(spec) if !spec.internal => validate_internal_command(kind, args),
        _ => Err(CommandError::UnknownKind(kind.chars().take(64).collect())),
    }
}

/// [`validate_command`] for any kind, internal ones included: for the commands fleetpulse
/// issues itself and for the device side, which executes every kind.
pub fn validate_internal_command(kind: &str, args: &Value) -> Result<Value, CommandError> {
    let spec = command_kind(kind).ok_or_else(|| CommandError::UnknownKind(kind.chars().take(64).collect()))?;
    let given = match args {
        Value::Null => Map::new(),
        Value::Object(map) => map.clone(),
        _ => return Err(CommandError::NotAnObject),
    };
    if let Some(unknown) = given.keys().find(|k| !spec.args.iter().any(|a| a.name == k.as_str())) {
        return Err(CommandError::UnknownArg { kind: spec.name, arg: unknown.chars().take(64).collect() });
    }
    let mut out = Map::new();
    for arg in spec.args {
        let invalid = |reason: String| CommandError::Invalid { kind: spec.name, arg: arg.name, reason };
        let value = given.get(arg.name);
        let checked = match (arg.kind, value) {
            (ArgKind::Integer { default, .. }, None) => Value::from(default),
            (ArgKind::Integer { min, max, .. }, Some(v)) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Value::from(n),
                _ => return Err(invalid(format!("must be an integer from {min} to {max}"))),
            },
            (ArgKind::Host | ArgKind::Confirm | ArgKind::HttpsUrl | ArgKind::Sha256, None)
            | (ArgKind::Count { .. } | ArgKind::Token { .. }, None) => {
                return Err(CommandError::Missing { kind: spec.name, arg: arg.name });
            }
            (ArgKind::HttpsUrl, Some(Value::String(url))) if is_https_url(url) => Value::from(url.as_str()),
            (ArgKind::HttpsUrl, Some(_)) => {
                return Err(invalid(format!(
                    "must be an https:// URL of at most {MAX_URL_BYTES} printable characters without spaces"
                )));
            }
            (ArgKind::Sha256, Some(Value::String(hex)))
                if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                Value::from(hex.as_str())
            }
            (ArgKind::Sha256, Some(_)) => return Err(invalid("must be 64 lowercase hexadecimal digits".into())),
            (ArgKind::Count { min, max }, Some(v)) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Value::from(n),
                _ => return Err(invalid(format!("must be an integer from {min} to {max}"))),
            },
            (ArgKind::Token { max }, Some(Value::String(text))) if is_token(text, max) => Value::from(text.as_str()),
            (ArgKind::Token { max }, Some(_)) => {
                return Err(invalid(format!("must be 1 to {max} printable characters without spaces")));
            }
            (ArgKind::Host, Some(Value::String(host))) if is_host(host) => Value::from(host.as_str()),
            (ArgKind::Host, Some(_)) => {
                return Err(invalid(
                    "must be a host name or IP address (1 to 253 characters of A-Z a-z 0-9 . : -)".into(),
                ));
            }
            (ArgKind::Confirm, Some(Value::Bool(true))) => Value::Bool(true),
            (ArgKind::Confirm, Some(_)) => return Err(invalid("must be true".into())),
            (ArgKind::ConfigChanges { .. }, None) => {
                return Err(CommandError::Missing { kind: spec.name, arg: arg.name });
            }
            (ArgKind::ConfigChanges { max_entries }, Some(v)) => {
                check_config_changes(v, max_entries).map_err(invalid)?;
                v.clone()
            }
        };
        out.insert(arg.name.to_owned(), checked);
    }
    Ok(Value::Object(out))
}

fn is_token(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
}

fn is_https_url(s: &str) -> bool {
    s.len() > "https://".len() && s.starts_with("https://") && is_token(s, MAX_URL_BYTES)
}

/// Why `v` is not a valid configuration-changes object ([`ArgKind::ConfigChanges`]).
fn check_config_changes(v: &Value, max_entries: u64) -> Result<(), String> {
    let Value::Object(map) = v else { return Err("must be an object of key → string or null".into()) };
    if map.is_empty() || map.len() as u64 > max_entries {
        return Err(format!("must hold 1 to {max_entries} keys"));
    }
    for (key, value) in map {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_CONFIG_KEY
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !key_ok {
            return Err(format!(
                "key {:?} must be 1 to {MAX_CONFIG_KEY} characters of A-Z a-z 0-9 . _ -",
                key.chars().take(64).collect::<String>()
            ));
        }
        match value {
            Value::Null => {}
            Value::String(s) if s.len() <= MAX_CONFIG_VALUE && !s.chars().any(char::is_control) => {}
            _ => {
                return Err(format!(
                    "the value of {key} must be null or a string of at most {MAX_CONFIG_VALUE} bytes without control characters"
                ));
            }
        }
    }
    Ok(())
}

fn is_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with('-')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b".:-".contains(&b))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn defaults_are_filled_and_bounds_enforced() {
        assert_eq!(validate_command("reboot", &Value::Null), Ok(json!({})));
        assert_eq!(
            validate_command("ping", &json!({"target": "10.0.0.1"})),
            Ok(json!({"target": "10.0.0.1", "count": 4}))
        );
        assert_eq!(
            validate_command("traceroute", &json!({"target": "pbx.example.com", "max_hops": 64})),
            Ok(json!({"target": "pbx.example.com", "max_hops": 64}))
        );
        assert_eq!(
            validate_command("packet_capture_start", &json!({})),
            Ok(json!({"duration_s": 60, "max_bytes": 10 * 1024 * 1024}))
        );
        assert!(matches!(
            validate_command("ping", &json!({"target": "x", "count": 21})),
            Err(CommandError::Invalid { .. })
        ));
        assert!(matches!(
            validate_command("ping", &json!({"target": "x", "count": -1})),
            Err(CommandError::Invalid { .. })
        ));
        assert!(matches!(
            validate_command("ping", &json!({"target": "x", "count": "4"})),
            Err(CommandError::Invalid { .. })
        ));
        assert!(matches!(validate_command("ping", &json!({})), Err(CommandError::Missing { arg: "target", .. })));
        assert!(matches!(validate_command("ping", &json!({"target": "a b"})), Err(CommandError::Invalid { .. })));
        assert!(matches!(validate_command("ping", &json!({"target": "-oProxy"})), Err(CommandError::Invalid { .. })));
        assert!(matches!(validate_command("reboot", &json!({"now": true})), Err(CommandError::UnknownArg { .. })));
        assert_eq!(validate_command("reboot", &json!([])), Err(CommandError::NotAnObject));
        assert_eq!(validate_command("format_c", &json!({})), Err(CommandError::UnknownKind("format_c".into())));
    }

    #[test]
    fn configuration_changes_are_bounded_and_internal() {
        let ok = json!({"changes": {"call.autoAnswer.SIP": "1", "old.key": null}});
        assert_eq!(validate_internal_command("apply_config", &ok), Ok(ok.clone()));
        assert_eq!(validate_command("apply_config", &ok), Err(CommandError::UnknownKind("apply_config".into())));
        assert!(!admin_command_kinds().any(|k| k.name == "apply_config"));
        for bad in [
            json!({}),
            json!({"changes": {}}),
            json!({"changes": []}),
            json!({"changes": {"a b": "1"}}),
            json!({"changes": {"k": 1}}),
            json!({"changes": {"k": "a\nb"}}),
            json!({"changes": {"k": "v".repeat(MAX_CONFIG_VALUE + 1)}}),
            json!({"changes": {"k".repeat(MAX_CONFIG_KEY + 1): "v"}}),
        ] {
            assert!(validate_internal_command("apply_config", &bad).is_err(), "{bad}");
        }
        let many: Map<String, Value> = (0..=MAX_CONFIG_CHANGES).map(|i| (format!("k{i}"), Value::from("v"))).collect();
        assert!(validate_internal_command("apply_config", &json!({"changes": many})).is_err());
    }

    #[test]
    fn destructive_commands_need_confirmation() {
        assert!(matches!(validate_command("factory_reset", &json!({})), Err(CommandError::Missing { .. })));
        assert!(matches!(
            validate_command("factory_reset", &json!({"confirm": false})),
            Err(CommandError::Invalid { .. })
        ));
        assert_eq!(validate_command("factory_reset", &json!({"confirm": true})), Ok(json!({"confirm": true})));
    }

    #[test]
    fn firmware_upgrades_are_internal_and_fully_specified() {
        let args = json!({
            "url": "https://fleet.example.com:8444/firmware/3/7?token=abc",
            "sha256": "ab".repeat(32),
            "size": 1024,
            "version": "2.1.0",
            "image": 3,
        });
        assert!(matches!(validate_command(UPGRADE_FIRMWARE, &args), Err(CommandError::UnknownKind(_))));
        assert_eq!(validate_internal_command(UPGRADE_FIRMWARE, &args), Ok(args.clone()));
        assert!(admin_command_kinds().all(|k| k.name != UPGRADE_FIRMWARE));
        let with = |name: &str, value: Value| {
            let mut a = args.clone();
            a[name] = value;
            validate_internal_command(UPGRADE_FIRMWARE, &a)
        };
        for (name, bad) in [
            ("url", json!("http://fleet.example.com/firmware/3/7")),
            ("url", json!("https://")),
            ("url", json!("https://a b")),
            ("url", json!(format!("https://{}", "a".repeat(MAX_URL_BYTES)))),
            ("sha256", json!("AB".repeat(32))),
            ("sha256", json!("ab".repeat(31))),
            ("size", json!(0)),
            ("size", json!(MAX_FIRMWARE_BYTES + 1)),
            ("version", json!("")),
            ("version", json!("2.1 beta")),
            ("version", json!("x".repeat(65))),
            ("image", json!(0)),
        ] {
            assert!(matches!(with(name, bad.clone()), Err(CommandError::Invalid { .. })), "{name} = {bad}");
        }
        let mut missing = args.clone();
        missing.as_object_mut().unwrap().remove("sha256");
        assert!(matches!(
            validate_internal_command(UPGRADE_FIRMWARE, &missing),
            Err(CommandError::Missing { arg: "sha256", .. })
        ));
    }

    #[test]
    fn kinds_are_unique_wire_names() {
        for (i, k) in COMMAND_KINDS.iter().enumerate() {
            assert!(k.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{}", k.name);
            assert!(COMMAND_KINDS[..i].iter().all(|o| o.name != k.name), "{} twice", k.name);
            if let Some(file) = k.file {
                assert_eq!(crate::domain::check_file_name(file), Ok(()));
            }
        }
    }
}

//! The alarm type table of SPEC §3 (the union of both YMCS appendices).
//!
//! Codes are stable and part of the protocol: a device reports an alarm by code. They are grouped
//! by severity (1xx critical, 2xx major, 3xx minor) and never reused; new types get new codes.

use serde::{Deserialize, Serialize};

/// How serious an alarm type is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Service is down or badly degraded.
    Critical,
    /// A function failed; service continues.
    Major,
    /// A single operation failed.
    Minor,
}

impl Severity {
    /// Lowercase name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Major => "major",
            Severity::Minor => "minor",
        }
    }

    /// Inverse of [`Severity::as_str`].
    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "critical" => Some(Severity::Critical),
            "major" => Some(Severity::Major),
            "minor" => Some(Severity::Minor),
            _ => None,
        }
    }
}

/// The stable numeric code of an alarm type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct AlarmTypeCode(pub u16);

/// One row of the alarm type table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmType {
    /// Stable code carried on the wire and in the store.
    pub code: AlarmTypeCode,
    /// Name as the guides print it.
    pub name: &'static str,
    /// Severity from SPEC §3.
    pub severity: Severity,
    /// Whether alarms of this type carry a downloadable alarm log (ALM-1).
    pub has_log: bool,
    /// Raised by the server itself (offline detection, thresholds), never reported by devices.
    pub derived: bool,
}

const fn t(code: u16, name: &'static str, severity: Severity, has_log: bool) -> AlarmType {
    AlarmType { code: AlarmTypeCode(code), name, severity, has_log, derived: false }
}

/// A type the server raises itself.
const fn derived(code: u16, name: &'static str, severity: Severity) -> AlarmType {
    AlarmType { code: AlarmTypeCode(code), name, severity, has_log: false, derived: true }
}

use Severity::{Critical, Major, Minor};

/// Code of the derived alarm raised when a device misses its heartbeats (ING-7, ALM-4).
pub const OFFLINE: AlarmTypeCode = AlarmTypeCode(109);
/// Code of the derived alarm raised when an associated device comes back online.
pub const OFFLINE_ASSOCIATED_DEVICE_BACK_ONLINE: AlarmTypeCode = AlarmTypeCode(206);

/// Every alarm type, ordered by code.
pub const ALARM_TYPES: &[AlarmType] = &[
    t(101, "Poor call quality", Critical, false),
    t(102, "Register failure", Critical, false),
    t(103, "Upgrade firmware failure", Critical, false),
    t(104, "Update configuration failure", Critical, false),
    t(105, "Application crash", Critical, true),
    t(106, "Application no response", Critical, true),
    t(107, "Kernel panic", Critical, true),
    t(108, "Exit program", Critical, false),
    derived(109, "Offline", Critical),
    t(110, "Associated device offline", Critical, false),
    t(111, "Wireless mic low power", Critical, false),
    t(112, "Wireless mic power off or disconnect", Critical, false),
    t(201, "Calendar synchronization failure", Major, false),
    t(202, "Device reboot", Major, false),
    t(203, "Meet now failure", Major, false),
    t(204, "BToE pairing failure", Major, false),
    t(205, "Exchange discovery failure", Major, false),
    derived(206, "Offline associated device back online", Major),
    t(301, "Call failed", Minor, false),
    t(302, "Visual voicemail retrieve failure", Minor, false),
    t(303, "Hold failure", Minor, false),
    t(304, "Resume failure", Minor, false),
    t(305, "Play visual voicemail failed", Minor, false),
    t(306, "RTP violate", Minor, false),
    t(307, "RTP address change", Minor, false),
    t(308, "RTP dead", Minor, false),
    t(309, "SRTP failure", Minor, false),
    t(310, "Call log retrieve failure", Minor, false),
    t(311, "Outlook contact retrieve failure", Minor, false),
    t(312, "Bluetooth paired failed", Minor, false),
    // 4xx: derived threshold alarms, raised by the alarm engine from resource samples (ALM-4).
    derived(401, "High CPU usage", Major),
    derived(402, "High memory usage", Major),
];

impl AlarmTypeCode {
    /// The table row for this code, if the code is known.
    pub fn alarm_type(self) -> Option<&'static AlarmType> {
        ALARM_TYPES.binary_search_by_key(&self, |t| t.code).ok().map(|i| &ALARM_TYPES[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_complete() {
        assert!(ALARM_TYPES.windows(2).all(|w| w[0].code < w[1].code));
        // SPEC §3 (codes below 400) has 12 critical, 6 major and 12 minor types.
        let count = |s| ALARM_TYPES.iter().filter(|t| t.code.0 < 400 && t.severity == s).count();
        assert_eq!((count(Critical), count(Major), count(Minor)), (12, 6, 12));
        let derived: Vec<_> = ALARM_TYPES.iter().filter(|t| t.derived).map(|t| t.code.0).collect();
        assert_eq!(derived, [109, 206, 401, 402]);
        let with_logs: Vec<_> = ALARM_TYPES.iter().filter(|t| t.has_log).map(|t| t.name).collect();
        assert_eq!(with_logs, ["Application crash", "Application no response", "Kernel panic"]);
    }

    #[test]
    fn lookup_by_code() {
        assert_eq!(OFFLINE.alarm_type().map(|t| t.name), Some("Offline"));
        assert_eq!(
            OFFLINE_ASSOCIATED_DEVICE_BACK_ONLINE.alarm_type().map(|t| (t.name, t.severity)),
            Some(("Offline associated device back online", Major))
        );
        assert_eq!(AlarmTypeCode(999).alarm_type(), None);
        assert_eq!(Severity::parse(Severity::Minor.as_str()), Some(Minor));
    }
}
